"""Tiny corpora and configs the LM tests write for themselves (no network, no shared data)."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = tuple(
    "the cat sat on a mat . a dog ran to the park . i drank apple juice and ate "  # noqa: SIM905
    "bread with jam . she reads books in the garden".split()
)


def write_corpus(dirpath: Path, lines: int = 120, seed: int = 0, name: str = "train.txt") -> Path:
    rng = random.Random(seed)
    text = (
        "\n".join(
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) for _ in range(lines)
        )
        + "\n"
    )
    path = Path(dirpath) / name
    path.write_text(text, encoding="utf-8")
    return path


def tiny_corpus(tmp_path: Path) -> tuple[Path, Path]:
    return write_corpus(tmp_path, 120, 0, "train.txt"), write_corpus(tmp_path, 20, 1, "valid.txt")


TINY_MODEL = {"emb_size": 12, "hidden_size": 12, "num_layers": 2}


SENTENCES = (
    "i drank apple juice",
    "the cat sat on the mat",
    "a dog ran to the park",
    "she reads books in the garden",
)


def patterned_corpus(dirpath: Path, lines: int, seed: int, name: str) -> Path:
    """Random order of four fixed sentences: learnable, so a loss can be expected to fall."""
    rng = random.Random(seed)
    path = Path(dirpath) / name
    path.write_text("\n".join(rng.choice(SENTENCES) for _ in range(lines)) + "\n")
    return path
