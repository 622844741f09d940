"""Training speed of a language model against its twin on torch.nn.LSTM (the LM benchmarks).

A speed claim is only useful against a baseline measured in the same process:
`compare_training_speed` times the lstmkit model and a twin built on torch.nn.LSTM with the same
weights, interleaved, so both see the same machine load. Imported by the benchmark scripts
(run as `python benchmarks/NAME.py`, so this file is `lm_speed`) and by the tests.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from lstmkit.training.loop import train_window
from lstmkit.training.model import LanguageModel


class TorchLSTMLM(nn.Module):
    """The same LM (embedding -> LSTM -> dropout -> decoder) on torch.nn.LSTM: the baseline."""

    def __init__(self, twin: LanguageModel) -> None:
        super().__init__()
        c = twin.config
        if c.cell != "lstm":
            raise ValueError("the torch.nn baseline is built for cell='lstm' only")
        self.config = c
        self.embedding = nn.Embedding(c.vocab_size, c.emb_size)
        self.rnn = nn.LSTM(
            c.emb_size, c.hidden_size, c.num_layers, dropout=c.dropout if c.num_layers > 1 else 0.0
        )
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size)
        self.drop = nn.Dropout(c.dropout)
        self.load_state_dict(twin.state_dict())  # same parameter names, so same weights

    def forward(self, tokens, hidden=None):
        out, hidden = self.rnn(self.drop(self.embedding(tokens)), hidden)
        return self.decoder(self.drop(out)), hidden


def _time_steps(model, data, bptt: int, steps: int, lr: float, clip: float, device) -> float:
    """Seconds per training step over `steps` windows of `data` (N, B), after one warm-up."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    hidden = None
    n_windows = (data.shape[0] - 1) // bptt
    t0 = 0.0
    for i in range(steps + 1):
        if i == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        k = i % n_windows
        x = data[k * bptt : k * bptt + bptt].to(device)
        y = data[k * bptt + 1 : k * bptt + bptt + 1].to(device)
        _, hidden = train_window(model, opt, x, y, hidden, clip=clip)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def compare_training_speed(
    model: LanguageModel,
    data,
    bptt: int,
    steps: int = 50,
    rounds: int = 3,
    lr: float = 0.1,
    clip: float = 5.0,
    extra_engines: tuple[str, ...] = (),
) -> dict:
    """Training tokens/s of lstmkit (as configured, plus `extra_engines`) and torch.nn.LSTM,
    median over `rounds` interleaved rounds of `steps` steps. Copies of the model are timed, so
    the model passed in is not changed."""
    import copy

    device = next(model.parameters()).device
    tokens_per_step = bptt * data.shape[1]
    contenders = {
        f"lstmkit (engine={model.config.engine})": copy.deepcopy(model),
        "torch.nn.LSTM": TorchLSTMLM(model).to(device),
    }
    for engine in extra_engines:
        m = copy.deepcopy(model)
        m.rnn.engine = engine
        contenders[f"lstmkit (engine={engine})"] = m
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, m in contenders.items():
            n = steps if "reference" not in name else max(5, steps // 5)
            times[name].append(_time_steps(m, data, bptt, n, lr, clip, device))
    result = {
        "tokens_per_step": tokens_per_step,
        "steps_per_round": steps,
        "rounds": rounds,
        "tokens_per_s": {k: tokens_per_step / statistics.median(v) for k, v in times.items()},
    }
    lk = [k for k in contenders if k.startswith("lstmkit (engine=" + model.config.engine)][0]
    result["ratio_lstmkit_over_torch"] = (
        result["tokens_per_s"][lk] / result["tokens_per_s"]["torch.nn.LSTM"]
    )
    engine_used = contenders[lk].rnn.last_engine
    result["lstmkit_engine_ran"] = engine_used
    return result


def report_training_speed(model: LanguageModel, data, args) -> dict:
    """compare_training_speed with a training benchmark's flags (--bptt, --speed-steps,
    --speed-rounds, --lr, --clip), its table printed."""
    print("measuring training tokens/s: lstmkit vs torch.nn.LSTM (same weights, interleaved)")
    speed = compare_training_speed(
        model,
        data,
        args.bptt,
        steps=args.speed_steps,
        rounds=args.speed_rounds,
        lr=args.lr,
        clip=args.clip,
    )
    for k, v in speed["tokens_per_s"].items():
        print(f"  {k:28s} {v:9.0f} tokens/s")
    return speed
