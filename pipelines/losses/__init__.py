"""Published distillation losses, one file per loss (functional core, no state)."""

from pipelines.losses.superpixel_contrastive import superpixel_contrastive_loss

__all__ = ["superpixel_contrastive_loss"]
