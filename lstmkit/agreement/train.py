"""Training a small language model on generated sentences (for the demo and `lstmkit agreement
train`). The model is the shared lstmkit.training.LanguageModel; only the batching differs from
the PTB trainer: every batch holds whole sentences, each `<eos> w1 ... wn <eos>`, padded at the
end, and padded positions are left out of the loss. Every sentence starts from a zero state, so
the model sees exactly what the scorer will give it.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from lstmkit.data.vocab import EOS, UNK, Vocab
from lstmkit.training.fit import Loop, LoopState, Step, fit
from lstmkit.training.model import LanguageModel, ModelConfig


@dataclass
class SentenceLMConfig:
    cell: str = "lstm"  # lstm | gru | rnn
    emb_size: int = 32
    hidden_size: int = 64
    num_layers: int = 1
    forget_bias: float | None = 1.0  # LSTM only; ignored for the other cells
    batch_size: int = 32
    lr: float = 3e-3  # Adam
    clip: float = 1.0  # gradient-norm clipping
    steps: int = 3000  # optimiser steps
    max_seconds: float = 300.0  # stop early after this much wall time
    seed: int = 0


def build_vocab(sentences: list[list[str]]) -> Vocab:
    return Vocab.build((w for s in sentences for w in s), specials=(UNK, EOS))


def sentence_batch(sentences: list[list[str]], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (T, B) for `<eos> s <eos>` padded with <eos>, and a (T-1, B) mask of real targets."""
    eos = vocab.stoi[EOS]
    seqs = [[eos, *vocab.encode(s), eos] for s in sentences]
    T = max(len(s) for s in seqs)
    ids = torch.full((T, len(seqs)), eos, dtype=torch.long)
    mask = torch.zeros(T - 1, len(seqs), dtype=torch.bool)
    for b, s in enumerate(seqs):
        ids[: len(s), b] = torch.tensor(s)
        mask[: len(s) - 1, b] = True
    return ids, mask


def train_sentence_lm(
    sentences: list[list[str]],
    vocab: Vocab,
    cfg: SentenceLMConfig,
    progress: bool = True,
    desc: str = "",
    evaluate=None,
    eval_every: int = 250,
) -> tuple[LanguageModel, dict]:
    """Train; returns the model (eval mode) and a history {"steps", "seconds", "loss": [...],
    "evals": [...]}. `evaluate(model) -> dict`, if given, runs every `eval_every` steps and at
    the end (in eval mode, not counted in "seconds"); its results go to history["evals"] with
    the step number."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    mcfg = ModelConfig(
        vocab_size=len(vocab),
        cell=cfg.cell,
        emb_size=cfg.emb_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        forget_bias=cfg.forget_bias if cfg.cell == "lstm" else None,
    )
    model = LanguageModel(mcfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    losses: list[float] = []
    evals: list[dict] = []
    running: float | None = None
    eval_seconds = 0.0
    bar = tqdm(total=cfg.steps, desc=desc or f"train {cfg.cell}", disable=not progress, unit="step")

    def run_eval(state: LoopState) -> None:
        nonlocal eval_seconds
        t = time.perf_counter()
        model.eval()
        evals.append({"step": state.step, **evaluate(model)})
        eval_seconds += time.perf_counter() - t

    def compute(sentences_batch: list[list[str]]) -> Step:
        ids, mask = sentence_batch(sentences_batch, vocab)
        logits, _ = model(ids[:-1])  # (T-1, B, V)
        nll = F.cross_entropy(logits.permute(1, 2, 0), ids[1:].T, reduction="none").T  # (T-1, B)
        return Step(nll[mask].mean())

    def after(state: LoopState, step: Step) -> None:
        nonlocal running
        value = step.loss.item()
        running = value if running is None else 0.95 * running + 0.05 * value
        bar.update(1)
        if (state.step - 1) % 25 == 0:
            losses.append(running)
            bar.set_postfix(loss=f"{running:.3f}")

    state = LoopState()
    if evaluate is not None:
        run_eval(state)  # the untrained model: step 0
    batches = (rng.sample(sentences, cfg.batch_size) for _ in range(cfg.steps))
    loop = Loop(clip=cfg.clip, max_seconds=cfg.max_seconds, every=eval_every)
    fit(model, opt, batches, compute, state, loop, after, run_eval if evaluate else None)
    bar.close()
    if evaluate is not None and evals[-1]["step"] != state.step:
        run_eval(state)
    model.eval()
    history = {
        "steps": state.step,
        "seconds": state.seconds,
        "eval_seconds": eval_seconds,
        "loss": losses,
        "evals": evals,
        "config": asdict(cfg),
        "model": mcfg.to_dict(),
    }
    return model, history
