"""Audio self-distillation stages (DESIGN 5.4): keyword data, DINO pre-training, UnFuSeD."""
