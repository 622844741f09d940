"""Collecting a language model's gates and states over sentences, as plain numpy arrays.

    states = collect_states(model, vocab, [["the", "cats", "are", "happy"], ...])
    states.names                  # ('i', 'f', 'g', 'o', 'c', 'h') for an LSTM; ('h',) for an RNN
    states.values["c"][k]         # (T_k, H): cell state after each token of sentence k
    X, index = states.flat("c")   # (N, H) over all tokens, index[n] = (sentence, position)

The values come from the core's gate trace (`model(..., return_trace=True)`): engine="auto"
computes it on the fused engine (the native one has no gates), the same values as the reference
engine to rounding. Position t holds the values after reading token t; the `<eos>` fed before
the first word is run but not kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class StateSet:
    tokens: list[list[str]]
    values: dict[str, list[np.ndarray]]  # name -> per sentence (T_k, H) float32
    mode: str = "LSTM"  # "LSTM" | "GRU" | "RNN"
    layer: int = -1
    meta: dict = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.values)

    @property
    def hidden_size(self) -> int:
        first = next(iter(self.values.values()))
        return int(first[0].shape[1])

    def flat(self, name: str) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """All tokens of all sentences: (N, H) values and (sentence, position) per row."""
        if name not in self.values:
            raise KeyError(f"no state {name!r}; this {self.mode} has {self.names}")
        rows = np.concatenate(self.values[name], axis=0)
        index = [(k, t) for k, toks in enumerate(self.tokens) for t in range(len(toks))]
        return rows, index

    def default_state(self) -> str:
        """The state one usually looks at: the LSTM cell state c, else the hidden state h."""
        return "c" if "c" in self.values else "h"


@torch.no_grad()
def collect_states(
    model,
    vocab,
    sentences: list[list[str]],
    layer: int = -1,
    bos: str | None = "<eos>",
    batch_size: int = 64,
    intervention=None,
) -> StateSet:
    """Run `model` (the LanguageModel contract, with return_trace) over whole sentences.
    `intervention`: an lstmkit.Intervention applied on every batch (e.g. an ablation): the
    states are then those of the edited model."""
    if not sentences or any(len(s) == 0 for s in sentences):
        raise ValueError("collect_states needs a non-empty list of non-empty token lists")
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    bos_ids = [vocab.stoi[bos]] if bos is not None and bos in vocab.stoi else []
    skip = len(bos_ids)
    values: dict[str, list[np.ndarray | None]] = {}
    mode = "RNN"
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start : start + batch_size]
        seqs = [bos_ids + vocab.encode(s) for s in chunk]
        T = max(len(s) for s in seqs)
        ids = torch.zeros(T, len(seqs), dtype=torch.long)
        for b, s in enumerate(seqs):
            ids[: len(s), b] = torch.tensor(s)
        kw = {} if intervention is None else {"intervention": intervention}
        out = model(ids.to(dev), return_trace=True, **kw)
        if len(out) < 3:
            raise TypeError(
                "the model did not return a trace; collect_states needs the "
                "LanguageModel contract: model(tokens, return_trace=True)"
            )
        trace = out[2].detach().to("cpu")
        mode = trace.mode
        per = trace.states(layer=layer, direction=0)  # name -> (T, B, H)
        for name, v in per.items():
            arr = v.float().numpy()
            lst = values.setdefault(name, [])
            for b, s in enumerate(chunk):
                lst.append(arr[skip : skip + len(s), b].copy())
    model.train(was_training)
    return StateSet(tokens=[list(s) for s in sentences], values=values, mode=mode, layer=layer)
