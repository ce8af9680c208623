"""Video-to-IMU distillation (COMODO, DESIGN 5.2): the egocentric generator stage, the video teacher, the IMU student."""
