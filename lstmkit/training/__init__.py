"""Language-model training, checkpoints, sampling and evaluation on top of the lstmkit layers."""

from lstmkit.training.checkpoint import (
    CheckpointError,
    LoadedCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from lstmkit.training.config import TrainConfig
from lstmkit.training.inference import evaluate, predict, sample
from lstmkit.training.loop import NonFiniteLossError
from lstmkit.training.model import LanguageModel, ModelConfig, detach_hidden
from lstmkit.training.trainer import TrainResult, train

__all__ = [
    "CheckpointError",
    "LanguageModel",
    "LoadedCheckpoint",
    "ModelConfig",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "detach_hidden",
    "evaluate",
    "load_checkpoint",
    "predict",
    "sample",
    "save_checkpoint",
    "train",
]
