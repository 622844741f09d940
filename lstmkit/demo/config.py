"""The demo's settings, in a module of its own so that the CLI can read their defaults without
importing the demo (numpy, plotting)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DemoConfig:
    out: str = "lstmkit-demo"
    train_sentences: int = 20_000
    max_train_distance: int = 12  # words between subject and verb in training sentences
    max_test_distance: int = 18
    per_distance: int = 100  # test sentences per distance
    emb_size: int = 32
    hidden_size: int = 64
    steps: int = 3000  # optimiser steps per model (batch 32)
    lr: float = 3e-3
    max_seconds: float = 150.0  # per model: stop training early after this
    inspect_sentences: int = 300
    seed: int = 0
    progress: bool = True
