"""Language-model training, checkpoints, sampling and evaluation on top of the lstmkit layers."""

from lstmkit.training.checkpoint import (
    CheckpointError,
    LoadedCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from lstmkit.training.model import LanguageModel, ModelConfig, detach_hidden

__all__ = [
    "CheckpointError",
    "LanguageModel",
    "LoadedCheckpoint",
    "ModelConfig",
    "detach_hidden",
    "load_checkpoint",
    "save_checkpoint",
]
