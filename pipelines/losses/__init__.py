"""Published distillation losses, one file per loss (functional core, no state)."""

from pipelines.losses.comodo import info_nce_loss, queue_distillation_loss
from pipelines.losses.dino import dino_loss, ema_momentum, ema_update, teacher_temperature, update_center
from pipelines.losses.superpixel_contrastive import superpixel_contrastive_loss
from pipelines.losses.unfused import unfused_loss

__all__ = [
    "dino_loss",
    "ema_momentum",
    "ema_update",
    "info_nce_loss",
    "queue_distillation_loss",
    "superpixel_contrastive_loss",
    "teacher_temperature",
    "unfused_loss",
    "update_center",
]
