"""LanguageModel: embedding -> lstmkit recurrent stack -> dropout -> decoder.

    cfg = ModelConfig(vocab_size=len(vocab), cell="lstm", hidden_size=200, num_layers=2)
    model = LanguageModel(cfg)
    logits, hidden = model(tokens)            # tokens (T, B) int64 -> logits (T, B, V)
    logits, hidden = model(next_tokens, hidden)   # carry the state on (detach it between batches)

Time-major token ids throughout, like PyTorch's word_language_model. The recurrent stack is one
`lstmkit.LSTM` / `GRU` / `RNN`, so every core extra (forget_bias, peephole, layer_norm, zoneout,
recurrent_dropout, weight_drop) and engine choice is a config field. The AWD-LSTM regularisers
(Merity et al. 2017) map onto: embed_dropout (drop whole words from the embedding matrix),
variational input/output dropout (`variational=True`: one mask per sequence, not per step),
recurrent_dropout (variational dropout on h_{t-1}) and weight_drop (DropConnect on W_hh).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstmkit.cells.registry import cell_names
from lstmkit.nn.layers import layer_class
from lstmkit.training.typed import check_types


@dataclass
class ModelConfig:
    vocab_size: int
    cell: str = "lstm"  # "lstm" | "gru" | "rnn" (tanh)
    emb_size: int = 200
    hidden_size: int = 200
    num_layers: int = 2
    dropout: float = 0.0  # on the embedding output, between layers and before the decoder
    tie_weights: bool = False  # decoder.weight is embedding.weight (needs emb_size == hidden)
    engine: str = "auto"  # lstmkit engine: "auto" | "native" | "reference"
    # initialisation: "torch" = each module's default; "uniform" = every parameter U(-r, r)
    # (Zaremba et al. 2014 use r = 0.1 for the small model)
    init: str = "torch"
    init_range: float = 0.1
    # AWD-LSTM style regularisers and core extras (all off by default)
    embed_dropout: float = 0.0  # probability of dropping a whole word's embedding
    variational: bool = False  # same dropout mask at every step of a batch (locked dropout)
    recurrent_dropout: float = 0.0  # variational dropout on h_{t-1} inside the recurrence
    weight_drop: float = 0.0  # DropConnect on the hidden-to-hidden weights
    zoneout: float = 0.0
    forget_bias: float | None = None  # LSTM only
    peephole: bool = False  # LSTM only
    layer_norm: bool = False

    def __post_init__(self) -> None:
        check_types(self)  # a TOML `hidden_size = "200"` or `peephole = "no"` stops here
        if self.cell not in cell_names():
            raise ValueError(f"cell must be one of {cell_names()}, got {self.cell!r}")
        for name in ("vocab_size", "emb_size", "hidden_size", "num_layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("dropout", "embed_dropout", "recurrent_dropout", "weight_drop", "zoneout"):
            v = getattr(self, name)
            if not 0.0 <= float(v) < 1.0:
                raise ValueError(f"{name} is a probability in [0, 1), got {v!r}")
        if self.tie_weights and self.emb_size != self.hidden_size:
            raise ValueError(
                f"tie_weights shares one matrix between embedding and decoder, so emb_size "
                f"({self.emb_size}) must equal hidden_size ({self.hidden_size})"
            )
        if self.init not in ("torch", "uniform"):
            raise ValueError(f"init must be 'torch' or 'uniform', got {self.init!r}")
        if self.init == "uniform" and not self.init_range > 0:
            raise ValueError(
                f"init_range is the r of U(-r, r), so it must be > 0, got {self.init_range}"
            )
        from lstmkit.engines import ENGINES  # late: the engines import the layers

        if self.engine != "auto" and self.engine not in ENGINES:
            raise ValueError(
                f"engine must be 'auto' or one of {sorted(ENGINES)}, got {self.engine!r}"
            )
        if self.cell != "lstm" and (self.forget_bias is not None or self.peephole):
            raise ValueError("forget_bias and peephole exist only for cell='lstm'")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)


def _dropout(x: Tensor, p: float, training: bool, variational: bool) -> Tensor:
    """Dropout on (T, B, C); variational = one mask per (B, C), shared over the T steps."""
    if not training or p == 0:
        return x
    if not variational:
        return F.dropout(x, p, True)
    mask = x.new_empty(1, x.shape[1], x.shape[2]).bernoulli_(1 - p) / (1 - p)  # (1, B, C)
    return x * mask


class LanguageModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embedding = nn.Embedding(c.vocab_size, c.emb_size)
        extras = {
            "recurrent_dropout": c.recurrent_dropout,
            "weight_drop": c.weight_drop,
            "zoneout": c.zoneout,
            "layer_norm": c.layer_norm,
            "engine": c.engine,
        }
        if c.cell == "lstm":
            extras.update(forget_bias=c.forget_bias, peephole=c.peephole)
        # dropout between layers only: the core warns (rightly) when it has nowhere to go
        between = c.dropout if c.num_layers > 1 else 0.0
        layer = layer_class(c.cell)
        self.rnn = layer(c.emb_size, c.hidden_size, c.num_layers, dropout=between, **extras)
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size)
        if c.tie_weights:
            self.decoder.weight = self.embedding.weight  # Press & Wolf 2017; Inan et al. 2017
        if c.init == "uniform":
            with torch.no_grad():
                for p in self.parameters():
                    p.uniform_(-c.init_range, c.init_range)
                if c.forget_bias is not None:  # keep the requested forget bias
                    H = c.hidden_size
                    f = self.rnn.cell.layout(self.rnn.opts).index("f")  # the gate layout's f
                    for k in range(c.num_layers):
                        getattr(self.rnn, f"bias_ih_l{k}")[f * H : (f + 1) * H] = c.forget_bias
                        getattr(self.rnn, f"bias_hh_l{k}")[f * H : (f + 1) * H] = 0.0

    @property
    def is_lstm(self) -> bool:
        return self.config.cell == "lstm"

    def init_hidden(self, batch_size: int) -> Tensor | tuple[Tensor, Tensor]:
        """Zero initial state: (h, c) each (L, B, H) for LSTM, h (L, B, H) otherwise."""
        w = self.decoder.weight
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        h = w.new_zeros(shape)
        return (h, w.new_zeros(shape)) if self.is_lstm else h

    def forward(self, tokens: Tensor, hidden=None, return_trace: bool = False, intervention=None):
        """tokens (T, B) int64 -> logits (T, B, V), hidden [, lstmkit.Trace]. `intervention`
        (lstmkit.Intervention) ablates or patches recurrent states (see lstmkit.intervene)."""
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ValueError(
                f"tokens must be a (T, B) int64 tensor (time-major), got "
                f"{tuple(tokens.shape)} {tokens.dtype}"
            )
        c = self.config
        weight = self.embedding.weight  # (V, E)
        if self.training and c.embed_dropout > 0:
            # drop whole words: one Bernoulli per vocabulary row, scaled to keep the expectation
            keep = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - c.embed_dropout)
            weight = weight * keep / (1 - c.embed_dropout)
        x = F.embedding(tokens, weight)  # (T, B, E)
        x = _dropout(x, c.dropout, self.training, c.variational)
        result = self.rnn(x, hidden, return_trace=return_trace, intervention=intervention)
        out, hidden = result[0], result[1]  # out (T, B, H)
        out = _dropout(out, c.dropout, self.training, c.variational)
        logits = self.decoder(out)  # (T, B, V)
        return (logits, hidden, result[2]) if return_trace else (logits, hidden)


class TokenStream:
    """A LanguageModel one token per call, its recurrent state kept between calls (sampling):
    ids (B,) int64 -> logits (B, V). The recurrent stack runs as a lstmkit.nn.stream.Stream
    (weights laid out once); the same as model(tokens) one step at a time, in evaluation mode."""

    def __init__(self, model: LanguageModel, hidden=None, batch_size: int | None = None) -> None:
        if model.training:
            raise ValueError(
                "a TokenStream runs the model in evaluation mode (no dropout); call model.eval() "
                "first"
            )
        self.model = model
        self.rnn = model.rnn.stream(hx=hidden, batch_size=batch_size)

    def __call__(self, ids: Tensor) -> Tensor:
        if self.model.training:  # its dropouts would be skipped: refuse rather than differ
            raise ValueError("the model was put in training mode; call model.eval() first")
        x = F.embedding(ids, self.model.embedding.weight)  # (B, E)
        return self.model.decoder(self.rnn(x))  # (B, V)

    @property
    def hidden(self):
        return self.rnn.state


def detach_hidden(hidden):
    """Cut the graph between BPTT windows while keeping the values (truncated BPTT)."""
    if hidden is None:
        return None
    if isinstance(hidden, Tensor):
        return hidden.detach()
    return tuple(detach_hidden(h) for h in hidden)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
