"""The inner loops: the optimizer step every training loop shares (language models, the agreement
models, the long-range tasks), one truncated-BPTT language-model step, and evaluation.

Kept apart from the trainer (config, checkpoints, logging, distributed) so benchmarks and user
code can drive training by hand with exactly the same step the `lstmkit` commands use.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstmkit.data.batching import windows
from lstmkit.training import distributed
from lstmkit.training.model import detach_hidden


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf."""

    def __init__(self, step: int, loss: float, detail: str = "") -> None:
        self.step, self.loss = step, loss
        super().__init__(
            f"training loss became {loss} at step {step}{detail}. Training stopped before "
            f"that step changed the weights; lower the learning rate (--lr), clip harder "
            f"(--clip), or check the data"
        )


class DivergedError(NonFiniteLossError):
    """Validation loss far worse than a uniform guess over the vocabulary after an epoch."""

    def __init__(self, step: int, loss: float, vocab_size: int, which: str = "validation") -> None:
        self.step, self.loss = step, loss
        FloatingPointError.__init__(
            self,
            f"the run diverged: {which} loss {loss:.3g} nats (perplexity "
            f"{perplexity(loss):.3g}) at step {step}, after a whole epoch, is far worse than a "
            f"uniform guess over the {vocab_size:,} tokens of the vocabulary "
            f"({math.log(vocab_size):.3f} nats) and than the untrained model. Training "
            f"stopped; the last checkpoint before it was kept. Lower --lr (Adam: about 1e-3), "
            f"or clip harder with --clip",
        )


def lm_loss(logits: Tensor, y: Tensor, per: str = "token") -> Tensor:
    """Cross-entropy of logits (T, B, V) against y (T, B).

    per="token": mean over all T*B tokens (PyTorch word_language_model).
    per="sequence": summed over the T steps, mean over the B columns (Zaremba et al. 2014, whose
    lr=1 / clip=5 equal lr=T / clip=5/T with per="token")."""
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    if per == "sequence":
        return loss * y.shape[0]
    if per != "token":
        raise ValueError(f"loss per must be 'token' or 'sequence', got {per!r}")
    return loss


def optimizer_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, loss: Tensor, clip: float, step: int
) -> None:
    """backward, clip the gradient's global L2 norm to `clip` (0: no clipping), step. Raises
    NonFiniteLossError, before the optimizer step (so the parameters stay good), when the
    gradient norm is NaN or inf: the one place every training loop handles clipping and NaNs."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    if clip > 0:
        norm = nn.utils.clip_grad_norm_(params, clip)
        if not torch.isfinite(norm):
            raise NonFiniteLossError(step, float(norm), " (in the gradient norm)")
    optimizer.step()


def check_loss(value: float, step: int, device: torch.device | None = None) -> None:
    """A NaN or inf loss stops training (NonFiniteLossError) before its backward. Under torchrun
    every rank stops at the same step, or the others would hang in the gradient all-reduce."""
    if distributed.any_true(not math.isfinite(value), device):
        where = "" if not math.isfinite(value) else " on another rank"
        raise NonFiniteLossError(step, value, where)


def train_window(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    hidden,
    clip: float = 0.0,
    loss_per: str = "token",
    step: int = 0,
) -> tuple[float, object]:
    """One truncated-BPTT step on window x, y (T, B); returns (mean nats per token, new hidden).

    The incoming hidden state is detached first, so gradients stop at the window boundary while
    the values carry on. Raises NonFiniteLossError (before the optimizer step, so the parameters
    stay good) when the loss or the gradient norm is NaN or inf."""
    model.train()
    logits, hidden = model(x, detach_hidden(hidden))
    loss = lm_loss(logits, y, loss_per)
    value = loss.item() / (y.shape[0] if loss_per == "sequence" else 1)
    check_loss(value, step, x.device)
    optimizer_step(model, optimizer, loss, clip, step)
    return value, hidden


@torch.no_grad()
def evaluate_stream(model: nn.Module, data: Tensor, bptt: int) -> tuple[float, int]:
    """Total negative log-likelihood (nats) and token count of a (N, B) batchified stream,
    carrying the hidden state across windows. Mean loss = total / count."""
    was_training = model.training
    model.eval()
    total, count, hidden = 0.0, 0, None
    for _, x, y in windows(data, bptt):
        logits, hidden = model(x, hidden)
        total += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"
        ).item()
        count += y.numel()
    model.train(was_training)
    return total, count


def perplexity(mean_nats: float) -> float:
    return math.exp(min(mean_nats, 700.0))  # exp overflows past ~709


def bits_per_char(mean_nats: float) -> float:
    return mean_nats / math.log(2)


def metric(mean_nats: float, level: str) -> dict:
    """Perplexity for words, bits per character for characters (and nats for both)."""
    if level == "char":
        return {"nats": mean_nats, "bpc": bits_per_char(mean_nats)}
    return {"nats": mean_nats, "ppl": perplexity(mean_nats)}
