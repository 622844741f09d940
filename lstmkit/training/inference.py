"""Using a trained model: sample text, predict the next token, evaluate on a file.

    from lstmkit.training import load_checkpoint, sample, predict, evaluate
    ckpt = load_checkpoint("runs/lm/best")
    predict(ckpt, "i drank apple", k=5)      # [("juice", 0.41), ...]
    sample(ckpt, prime="the ", length=200, temperature=0.8, top_k=40, seed=0)
    evaluate(ckpt, "test.txt")              # {"nats": ..., "ppl": ... or "bpc": ..., ...}

Each accepts a checkpoint directory or a LoadedCheckpoint. Word-level prompts are read as the
continuation of a sentence that starts after an "<eos>", which is how the model saw sentence
starts in training; character-level prompts are used as they are.
"""

from __future__ import annotations

import math
import numbers
import operator
import os

import torch
import torch.nn.functional as F

from lstmkit.data.batching import as_tensor, batchify
from lstmkit.data.text import detokenize, prompt_tokens, read_tokens
from lstmkit.data.vocab import EOS
from lstmkit.training.checkpoint import LoadedCheckpoint, load_checkpoint
from lstmkit.training.config import MAX_SEED
from lstmkit.training.loop import evaluate_stream
from lstmkit.training.model import TokenStream

# The generated tokens are held in memory and returned at once; at the ~10^4 tokens/s of a
# small model on a CPU this is already hours, and a larger request is a typo, not a wish.
MAX_SAMPLE_LENGTH = 10_000_000
ENCODING_ERRORS = ("strict", "replace")
SEED_TEXT = "2**63 - 1025"  # MAX_SEED as people write it (a test checks they agree)


def _int(
    name: str, value, lo: int, hi: int | None = None, hint: str = "", hi_text: str = ""
) -> int:
    """`value` as an int in [lo, hi], or a TypeError / ValueError that says which is wrong."""
    try:
        if isinstance(value, bool):  # True is an int to Python, never a count or a seed here
            raise TypeError
        value = operator.index(value)  # int, numpy integers; not 2.0 or "3"
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if value < lo or (hi is not None and value > hi):
        expected = f">= {lo:,}" if hi is None else f"from {lo:,} to {hi_text or f'{hi:,}'}"
        raise ValueError(f"{name} must be {expected}, got {value:,}{hint}")
    return value


def _check_text(name: str, value) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")


def _loaded(ckpt: LoadedCheckpoint | str | os.PathLike) -> LoadedCheckpoint:
    return ckpt if isinstance(ckpt, LoadedCheckpoint) else load_checkpoint(ckpt)


def _level(ckpt: LoadedCheckpoint) -> str:
    return ckpt.meta.get("data", {}).get("level", "word")


def _context(ckpt: LoadedCheckpoint, text: str) -> tuple[list[int], list[str]]:
    """Prompt ids (with a leading <eos> at word level) and the prompt words not in the vocab."""
    level = _level(ckpt)
    tokens = prompt_tokens(text, level)
    unknown = [t for t in tokens if t not in ckpt.vocab]
    if level != "char" and EOS in ckpt.vocab:
        tokens = [EOS] + tokens
    if not tokens:
        if "\n" in ckpt.vocab:
            tokens = ["\n"]
        else:
            raise ValueError(
                "an empty prompt needs a start token: the vocabulary has neither "
                "<eos> nor a newline; give some priming text"
            )
    if unknown and ckpt.vocab.unk_token is None:
        raise ValueError(
            f"prompt tokens {unknown} are not in the vocabulary, which has no unknown token"
        )
    return ckpt.vocab.encode(tokens), unknown


@torch.no_grad()
def _run_prompt(ckpt: LoadedCheckpoint, ids: list[int]) -> tuple[torch.Tensor, TokenStream]:
    """The prompt in one forward call (faster than token by token), then a TokenStream that
    goes on from its last state: the logits (V,) after the prompt, and the stream."""
    model = ckpt.model.eval()
    device = next(model.parameters()).device
    x = torch.tensor(ids, dtype=torch.long, device=device).view(-1, 1)  # (T, 1)
    logits, hidden = model(x)
    return logits[-1, 0], TokenStream(model, hidden)


def predict(
    ckpt: LoadedCheckpoint | str | os.PathLike, prefix: str, k: int = 10
) -> list[tuple[str, float]]:
    """The k most probable next tokens after `prefix`, with their probabilities."""
    k = _int("k", k, 1, hint="; ask for at least one token")
    _check_text("prefix", prefix)
    ckpt = _loaded(ckpt)
    ids, _ = _context(ckpt, prefix)
    logits, _ = _run_prompt(ckpt, ids)  # the stream is not needed: one token only
    probs = F.softmax(logits.float(), dim=-1)
    top = torch.topk(probs, min(k, probs.numel()))
    return [(ckpt.vocab.itos[i], p) for p, i in zip(top.values.tolist(), top.indices.tolist())]


def unknown_prompt_tokens(ckpt: LoadedCheckpoint | str | os.PathLike, text: str) -> list[str]:
    _check_text("text", text)
    return _context(_loaded(ckpt), text)[1]


@torch.no_grad()
def sample(
    ckpt: LoadedCheckpoint | str | os.PathLike,
    prime: str = "",
    length: int = 200,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
) -> str:
    """Generate `length` tokens after `prime`; returns the prime followed by the generated text.

    temperature < 1 sharpens the distribution (safer, more repetitive), > 1 flattens it;
    top_k > 0 samples only among the k most probable tokens. Arguments are checked before the
    checkpoint is loaded: a TypeError or ValueError names the one that is wrong."""
    _check_text("prime", prime)
    length = _int("length", length, 0, MAX_SAMPLE_LENGTH, hint=" (tokens to generate)")
    top_k = _int("top_k", top_k, 0, hint="; 0 samples among all tokens")
    if seed is not None:
        seed = _int(
            "seed", seed, 0, MAX_SEED, hint="; pick a seed in that range", hi_text=SEED_TEXT
        )
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a number, got {temperature!r}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(
            f"temperature must be a finite number > 0, got {temperature}; 1 samples from the "
            f"model's distribution, smaller values are safer, larger ones more surprising"
        )
    ckpt = _loaded(ckpt)
    gen = torch.Generator(device="cpu")
    # no seed: fresh entropy, without reseeding torch's global generator as torch.seed() would
    gen.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(7), "little"))
    ids, _ = _context(ckpt, prime)
    logits, stream = _run_prompt(ckpt, ids)
    device = logits.device
    out: list[int] = []
    for _ in range(length):
        # the largest logit subtracted first: the same softmax, but a tiny temperature then
        # gives 0 and -inf instead of inf - inf = nan
        # (float64: 1e-300 is a valid temperature, but 0 in float32)
        scaled = logits.cpu().double()
        scaled = (scaled - scaled.max()) / temperature  # (V,)
        if top_k:
            kth = torch.topk(scaled, min(top_k, scaled.numel())).values[-1]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        nxt = int(torch.multinomial(F.softmax(scaled, dim=-1), 1, generator=gen))
        out.append(nxt)
        logits = stream(torch.tensor([nxt], dtype=torch.long, device=device))[0]  # (V,)
    level = _level(ckpt)
    generated = detokenize(ckpt.vocab.decode(out), level)
    if level == "char":
        return prime + generated
    sep = "" if not prime or prime.endswith(("\n", " ")) else " "
    return prime + sep + generated


def evaluate(
    ckpt: LoadedCheckpoint | str | os.PathLike,
    path: str | os.PathLike,
    batch_size: int = 1,
    bptt: int = 100,
    errors: str = "strict",
) -> dict:
    """Mean loss on a text file, read at the checkpoint's level: nats per token, plus perplexity
    (word levels) or bits per character (char level); `unk_rate` is the fraction of tokens that
    were not in the vocabulary (a high value makes perplexity look better than it is).

    batch_size larger than half the file's tokens is lowered to that (each stream needs two)."""
    batch_size = _int("batch_size", batch_size, 1, hint="; 1 gives every token its full context")
    bptt = _int("bptt", bptt, 1, hint="; it sets only how many steps one forward call takes")
    if errors not in ENCODING_ERRORS:
        raise ValueError(
            f"errors must be one of {ENCODING_ERRORS}, got {errors!r}: stop at bytes that are "
            f"not UTF-8, or replace them with U+FFFD"
        )
    ckpt = _loaded(ckpt)
    level = _level(ckpt)
    tokens = read_tokens(path, level, errors)
    ids = ckpt.vocab.encode(tokens)
    batch_size = max(1, min(batch_size, len(ids) // 2))
    device = next(ckpt.model.parameters()).device
    data = batchify(as_tensor(ids), batch_size).to(device)
    total, count = evaluate_stream(ckpt.model, data, bptt)
    nats = total / count
    unk = ckpt.vocab.unk_id
    result = {
        "file": str(path),
        "level": level,
        "tokens": count,
        "nats": nats,
        "unk_rate": (sum(1 for i in ids if i == unk) / len(ids)) if unk is not None else 0.0,
    }
    if level == "char":
        result["bpc"] = nats / math.log(2)
    else:
        result["ppl"] = math.exp(min(nats, 700.0))
    return result
