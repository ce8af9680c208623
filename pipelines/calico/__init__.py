"""CALICO camera-lidar BEV pre-training (DESIGN 5.3): label-free regions, then PRC and RAD."""
