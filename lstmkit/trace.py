"""The Trace: every gate, cell state and hidden state of a recurrent stack at every step.

Ask for one with `output, h, trace = layer(x, return_trace=True)`. No hooks are needed: the engine
records the values it computes anyway. Tensors keep their autograd history, so a loss may use them
(e.g. a penalty on saturated gates); call `trace.detach()` to keep only the values.

Shapes, for L = num_layers, D = 2 if bidirectional else 1, T steps, B batch, H = hidden_size and
H_out = proj_size or hidden_size:

    gates[name]  (L, D, T, B, H)      name in trace.gate_names: i, f, g, o (LSTM); r, z, n (GRU)
    cell         (L, D, T, B, H)      LSTM cell state c_t after step t; None for GRU and RNN
    hidden       (L, D, T, B, H_out)  hidden state h_t after step t (what the layer outputs)

With batch_first=True the T and B axes are swapped: (L, D, B, T, H). For unbatched input the B
axis is absent. Steps at or past a sequence's length (lengths= or a PackedSequence) hold zeros;
`lengths` then gives each sequence's length in the caller's batch order. Direction 1 is the
reverse direction, indexed by input position (step t of direction 1 saw x_t, x_{t+1}, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class Trace:
    mode: str  # "LSTM", "GRU" or "RNN"
    gate_names: tuple[str, ...]
    gates: dict[str, Tensor]
    hidden: Tensor
    cell: Tensor | None = None
    batch_first: bool = False
    batched: bool = True
    lengths: Tensor | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return self.hidden.shape[0]

    @property
    def num_directions(self) -> int:
        return self.hidden.shape[1]

    def gate(self, name: str, layer: int = -1, direction: int = 0) -> Tensor:
        """One gate's activations for one layer and direction: (T, B, H), or (B, T, H)."""
        if name not in self.gates:
            raise KeyError(
                f"no gate {name!r} in this {self.mode} trace; its gates are {self.gate_names}"
            )
        return self.gates[name][layer, direction]

    def states(self, layer: int = -1, direction: int = 0) -> dict[str, Tensor]:
        """Everything of one layer and direction: gates, 'c' (LSTM) and 'h'."""
        out = {k: v[layer, direction] for k, v in self.gates.items()}
        if self.cell is not None:
            out["c"] = self.cell[layer, direction]
        out["h"] = self.hidden[layer, direction]
        return out

    def map(self, fn) -> Trace:
        """A new Trace with `fn` applied to every tensor (gates, cell, hidden)."""
        return Trace(
            mode=self.mode,
            gate_names=self.gate_names,
            gates={k: fn(v) for k, v in self.gates.items()},
            hidden=fn(self.hidden),
            cell=None if self.cell is None else fn(self.cell),
            batch_first=self.batch_first,
            batched=self.batched,
            lengths=self.lengths,
            meta=dict(self.meta),
        )

    def detach(self) -> Trace:
        return self.map(lambda t: t.detach())

    def to(self, *args, **kwargs) -> Trace:
        return self.map(lambda t: t.to(*args, **kwargs))

    def numpy(self) -> dict[str, object]:
        """Plain numpy arrays keyed 'gate_i', ..., 'cell', 'hidden' (detached, on CPU)."""
        out: dict[str, object] = {
            f"gate_{k}": v.detach().cpu().numpy() for k, v in self.gates.items()
        }
        if self.cell is not None:
            out["cell"] = self.cell.detach().cpu().numpy()
        out["hidden"] = self.hidden.detach().cpu().numpy()
        return out
