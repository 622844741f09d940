"""Stream: stateful step-by-step inference (sampling, live audio or control loops).

    lstm = lstmkit.LSTM(64, 128, num_layers=2)
    stream = lstm.stream(batch_size=1)          # or lstm.stream(hx=(h0, c0))
    with torch.no_grad():
        for x_t in frames:                      # x_t (B, input_size), or (input_size,) for B = 1
            y_t = stream(x_t)                   # (B, H_out): the last layer's h_t
    h, c = stream.state                         # (L, B, H) each, as forward's h_n
    stream.reset(done)                          # done (B,) bool: those sequences start afresh

Token by token, a stream computes exactly what one forward call over the whole sequence computes
(the tests hold them equal, float64, 1e-10), for every cell and option; a bidirectional layer
cannot stream (its reverse direction needs the future).

Why not `layer(x_t[None], state)` per token: each forward call redoes a sequence's per-call work
(checks, engine choice, weight layouts). A stream lays the weights out once and refreshes them
only when a parameter changes (an optimizer step, load_state_dict). Which step ran, and why, is in
`last_engine` / `last_engine_reason`:

    "fused"      the compiled step of lstmkit.engines.stream_step: every layer in one C++ call,
                 one matmul per layer; LSTM / GRU / RNN without layer norm or zoneout, on CPU,
                 without gradients (under torch.no_grad or with frozen parameters)
    "reference"  the reference engine's step (lstmkit.engines.reference.cell_step): any cell and
                 option, on any device, with gradients, and the regularisers' masks in training
                 (recurrent dropout and weight drop drawn once per stream, zoneout per step)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lstmkit.cells.base import input_projection
from lstmkit.cells.regularizers import bernoulli_mask, dropout_mask
from lstmkit.engines import stream_step
from lstmkit.engines.reference import cell_step
from lstmkit.nn import inputs
from lstmkit.trace import Trace


class Stream:
    """The state of B sequences inside one layer, advanced one step per call. Made by
    `layer.stream(hx=None, batch_size=1)`; see the module docstring."""

    def __init__(self, layer, hx=None, batch_size: int = 1) -> None:
        if layer.bidirectional:
            raise ValueError(
                "a bidirectional layer cannot stream: its reverse direction reads the sequence "
                "from its end. Run forward() on the whole sequence, or stream a unidirectional "
                "layer"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        w = layer.weight_ih_l0
        if hx is not None:
            batch_size = _batch_of(hx)
        self.layer = layer
        self.batch_size = batch_size
        states = inputs._prepare_hx(layer, hx, True, batch_size, w)  # (L, B, *) each, checked
        L = layer.num_layers
        # per layer [h (B, H_out), c (B, H)]: the initial state (what reset() restores), and
        # the buffers the compiled step advances in place
        self._initial = [[s[k].detach().clone() for s in states] for k in range(L)]
        self._buffers = [[s.clone() for s in layer_state] for layer_state in self._initial]
        # the current state: the buffers, or the reference step's (autograd) tensors
        self._state = self._buffers
        self._compiled: stream_step.CompiledStep | None = None
        self._params = None  # the reference step's LayerParams (weight drop drawn once)
        self._key: tuple | None = None  # what the prepared step was made from, and for
        self._choice: tuple[str, str] = ("", "")
        self._rmask: list[Tensor | None] | None = None
        self._shape = (batch_size, layer.input_size)
        self.last_engine: str | None = None
        self.last_engine_reason: str | None = None

    # ---- state -------------------------------------------------------------------------------
    @property
    def state(self):
        """The current state as forward returns it: h (L, B, H_out), and c (L, B, H) for LSTM
        (copies: the stream goes on writing its own)."""
        n = len(self.layer.cell.state_names)
        stacked = tuple(torch.stack([s[i] for s in self._state]) for i in range(n))
        return stacked if n > 1 else stacked[0]

    def reset(self, which: Tensor | None = None) -> None:
        """Start sequences afresh from the initial state (hx given to stream(), else zeros):
        all of them, or those where `which` (B,) bool is True (an episode or utterance ended).
        A full reset also draws a new recurrent dropout mask in training."""
        if which is None:
            self._restore(lambda init, cur: init)
            self._rmask = None
            return
        which = torch.as_tensor(which)
        if which.dtype != torch.bool or tuple(which.shape) != (self.batch_size,):
            raise ValueError(
                f"reset(which) takes a ({self.batch_size},) bool tensor, True for the sequences "
                f"to start afresh; got {which.dtype} of shape {tuple(which.shape)}"
            )
        rows = which.to(self._initial[0][0].device)[:, None]  # (B, 1)
        self._restore(lambda init, cur: torch.where(rows, init, cur))

    def _restore(self, value) -> None:
        if self._state is self._buffers:
            with torch.no_grad():
                for init, buf in zip(self._initial, self._buffers):
                    for s0, s in zip(init, buf):
                        s.copy_(value(s0, s))
        else:  # autograd tensors: a new value (the kept rows stay differentiable)
            self._state = [
                [value(s0, s) for s0, s in zip(i, c)] for i, c in zip(self._initial, self._state)
            ]

    # ---- one step ----------------------------------------------------------------------------
    def __call__(self, x: Tensor, return_trace: bool = False):
        """x (B, input_size), or (input_size,) for a stream of batch 1 -> y (B, H_out) (or
        (H_out,)), and a Trace of this one step (T = 1) with return_trace=True."""
        layer = self.layer
        unbatched = isinstance(x, Tensor) and x.dim() == 1
        if unbatched:
            x = x[None]
        if not (isinstance(x, Tensor) and x.shape == self._shape):
            self._refuse(x, unbatched)
        # what decides the step and its prepared weights; equal on almost every call
        key = (
            layer.spec, layer.training, layer.engine, torch.is_grad_enabled(), x.requires_grad,
            x.dtype, x.device, *[(id(p), p._version) for p in layer._parameters.values()],
        )  # fmt: skip
        if key != self._key:
            self._prepare(x, key)
        engine, self.last_engine_reason = self._choice
        self.last_engine = engine
        if engine == "fused":
            if self._state is not self._buffers:  # after reference steps: take their values
                with torch.no_grad():
                    for buf, cur in zip(self._buffers, self._state):
                        for b, c in zip(buf, cur):
                            b.copy_(c)
                self._state = self._buffers
            y = self._compiled.run(x)
            gates = self._compiled.gates(layer.cell.trace_gates(layer.opts)) if return_trace else {}
        else:
            y, gates = self._reference(x)
        if not return_trace:
            return y[0] if unbatched else y
        return (y[0] if unbatched else y), self._trace(gates, unbatched)

    def _refuse(self, x, unbatched: bool) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"a stream step takes a Tensor, got {type(x).__name__}")
        B, want = self._shape
        shapes = f"({B}, {want})" + (f" or ({want},)" if B == 1 else "")
        got = tuple(x.shape[1:]) if unbatched else tuple(x.shape)
        raise ValueError(
            f"a stream step takes one time step of shape {shapes} (batch, input_size), "
            f"got {got}; for a whole sequence call the layer itself"
        )

    def _prepare(self, x: Tensor, key: tuple) -> None:
        """Choose the step for this call's conditions and lay its weights out (once per key)."""
        layer = self.layer
        w = layer.weight_ih_l0
        inputs._check_tensor("input", x, w.dtype, w.device)
        needs_grad = x.requires_grad or any(p.requires_grad for p in layer.parameters())
        if layer.engine == "reference":
            why_not = "engine='reference' was requested"
        else:
            why_not = stream_step.unsupported(layer.spec, layer.training, x)
            if why_not is None and torch.is_grad_enabled() and needs_grad:
                why_not = "gradients are needed (use torch.no_grad() for the fast step)"
            if why_not is not None:
                why_not = f"the compiled step cannot run this: {why_not}"
        self._params = layer._params()  # weight drop in training draws here: once per stream
        if why_not is None:
            self._compiled = stream_step.CompiledStep.prepare(
                layer.spec, self._params, self._buffers
            )
            self._choice = ("fused", "the compiled step (weights laid out once, one call per step)")
        else:
            self._compiled = None
            self._choice = ("reference", why_not)
        self._key = key

    def _reference(self, x: Tensor) -> tuple[Tensor, dict]:
        """One step through the reference engine's cell_step, layer by layer."""
        layer = self.layer
        training = layer.training
        H, H_out = layer.hidden_size, layer.proj_size or layer.hidden_size
        B = x.shape[0]
        if training and layer.recurrent_dropout > 0 and self._rmask is None:
            rate = layer.recurrent_dropout  # variational: one mask per sequence
            self._rmask = [dropout_mask((B, H_out), rate, x) for _ in self._state]
        zc, zh = layer.zoneout  # the pair is (cell, hidden)
        rates = (0.0, 0.0) if training else (zh, zc)  # evaluation: zoneout's expectation
        # the buffers are written in place by the compiled step: autograd must not keep them
        state = self._state
        if state is self._buffers:
            state = [[s.clone() for s in layer_state] for layer_state in state]
        per_layer: list[dict[str, Tensor]] = []
        new_state = []
        inp = x
        for k, (p, prev) in enumerate(zip(self._params, state)):
            if k > 0 and training and layer.dropout > 0:
                inp = F.dropout(inp, layer.dropout, training=True)
            zoneout_t = (
                bernoulli_mask((B, H_out), zh, x) if training and zh > 0 else None,
                bernoulli_mask((B, H), zc, x) if training and zc > 0 else None,
            )[: len(prev)]
            rmask = None if self._rmask is None else self._rmask[k]
            xp = input_projection(inp, p)  # (B, G*H)
            new, gates = cell_step(layer.spec, p, xp, tuple(prev), rmask, zoneout_t, rates)
            new_state.append(list(new))
            per_layer.append(gates)
            inp = new[0]
        self._state = new_state
        names = layer.cell.trace_gates(layer.opts)
        return inp, {g: torch.stack([gates[g] for gates in per_layer]) for g in names}

    def _trace(self, gates: dict[str, Tensor], unbatched: bool) -> Trace:
        """This step as a Trace with T = 1: gates, cell and hidden (L, D=1, T=1, B, *)."""
        cell = self.layer.cell
        names = cell.trace_gates(self.layer.opts)

        def one_step(t: Tensor) -> Tensor:  # (L, B, *) -> (L, 1, 1, B, *), a copy
            t = t[:, None, None].clone()
            return t.squeeze(3) if unbatched else t

        return Trace(
            mode=cell.name,
            gate_names=names,
            gates={g: one_step(gates[g]) for g in names},
            hidden=one_step(torch.stack([s[0] for s in self._state])),
            cell=(
                one_step(torch.stack([s[1] for s in self._state]))
                if "c" in cell.state_names
                else None
            ),
            batched=not unbatched,
        )


def _batch_of(hx) -> int:
    first = hx[0] if isinstance(hx, (tuple, list)) and hx else hx
    if not isinstance(first, Tensor) or first.dim() != 3:
        raise ValueError(
            "a stream's hx is batched, as forward's: h_0 (num_layers, B, H_out) and, for LSTM, "
            "c_0 (num_layers, B, hidden_size)"
        )
    return first.shape[1]
