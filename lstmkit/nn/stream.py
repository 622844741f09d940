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
(checks, engine choice, weight layouts). A stream lays the weights out once and again only when
something they depend on changes: a parameter (an optimizer step, load_state_dict, a reassigned
or converted parameter: autograd's version counters and the storage say so), train / eval,
grad mode, weight_drop. Changes made through `param.data` bypass the version counter: call
`stream.refresh()` after them. Which step ran, and why, is in `last_engine` /
`last_engine_reason`:

    "fused"      the compiled step of lstmkit.engines.stream_step: every layer in one C++ call,
                 one matmul per layer; LSTM / GRU / RNN without layer norm or zoneout, on CPU,
                 without gradients (under torch.no_grad or with nothing requiring grad)
    "reference"  the reference engine's step (lstmkit.engines.reference.cell_step): any cell and
                 option, on any device, with gradients (to the weights, the input and hx), and
                 the regularisers' masks in training: recurrent dropout and weight drop once
                 per stream (a full reset() draws new ones), zoneout and dropout between layers
                 at every step. A stream that trains: call `stream.detach()` after each
                 backward (truncated backpropagation through time), as between forward calls.
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
from lstmkit.nn.params import gather
from lstmkit.trace import Trace


class Stream:
    """The state of B sequences inside one layer, advanced one step per call. Made by
    `layer.stream(hx=None, batch_size=None)`; see the module docstring."""

    def __init__(self, layer, hx=None, batch_size: int | None = None) -> None:
        if layer.bidirectional:
            raise ValueError(
                "a bidirectional layer cannot stream: its reverse direction reads the sequence "
                "from its end. Run forward() on the whole sequence, or stream a unidirectional "
                "layer"
            )
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if hx is not None:
            B = _batch_of(hx)
            if batch_size is not None and batch_size != B:
                raise ValueError(
                    f"batch_size={batch_size} but hx holds {B} sequences; give one of the two"
                )
            batch_size = B
        self.layer = layer
        self.batch_size = batch_size or 1
        states = inputs._prepare_hx(layer, hx, True, self.batch_size, layer.weight_ih_l0)
        # per layer [h (B, H_out), c (B, H)]: the initial state (what reset() restores; hx's
        # own tensors, so that gradients reach hx), and the contiguous buffers the compiled step
        # advances in place
        self._initial = [[s[k] for s in states] for k in range(layer.num_layers)]
        self._buffers = _buffers_like(self._initial)
        # the current state: the buffers, or tensors autograd may hold (hx requiring grad, or
        # the reference step's results)
        differentiable = any(s.requires_grad for s in states)
        self._state = self._initial if differentiable else self._buffers
        self._compiled: stream_step.CompiledStep | None = None
        self._params = None  # the reference step's LayerParams, with the weight-drop masks
        self._drop: list[Tensor] | None = None  # weight drop's masks on W_hh, once per stream
        self._rmask: list[Tensor] | None = None  # recurrent dropout's, once per stream
        self._key: tuple | None = None  # what the prepared step was made from, and for
        self._choice: tuple[str, str] = ("", "")
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
        A full reset also draws new recurrent dropout and weight drop masks in training."""
        if which is None:
            self._restore(lambda init, cur: init)
            self._rmask = self._drop = None
            self._key = None  # weight drop's masks go with the laid-out weights
            return
        try:
            which = torch.as_tensor(which)
        except (TypeError, ValueError, RuntimeError):
            which = None
        if which is None or which.dtype != torch.bool or tuple(which.shape) != (self.batch_size,):
            got = "something else" if which is None else f"{which.dtype} {tuple(which.shape)}"
            raise ValueError(
                f"reset(which) takes a ({self.batch_size},) bool tensor, True for the sequences "
                f"to start afresh; got {got}"
            )
        rows = which.to(self._initial[0][0].device)[:, None]  # (B, 1)
        self._restore(lambda init, cur: torch.where(rows, init, cur))

    def detach(self) -> None:
        """Keep the state's values, cut its autograd history (truncated backpropagation through
        time in a stream that trains: call it after each backward)."""
        if self._state is not self._buffers:
            self._state = [[s.detach() for s in layer_state] for layer_state in self._state]
        self._key = None  # weight drop's masked W_hh starts a fresh graph too

    def refresh(self) -> None:
        """Lay the weights out again (after changes made through `param.data`, which autograd's
        version counters do not record)."""
        self._key = None

    def copy(self) -> Stream:
        """A second stream on the same layer from this one's current state (beam search)."""
        other = Stream.__new__(Stream)
        other.__dict__.update(self.__getstate__())
        other._state = [[s.clone() for s in layer_state] for layer_state in self._state]
        if self._state is self._buffers:
            other._state = other._buffers = _buffers_like(self._state)
        else:
            other._buffers = _buffers_like(self._buffers)
        return other

    def __getstate__(self) -> dict:
        """Copies and pickles leave the compiled step behind (it is laid out again on use)."""
        state = dict(self.__dict__)
        state.update(_compiled=None, _key=None)
        return state

    def _restore(self, value) -> None:
        if self._state is self._buffers:
            with torch.no_grad():
                for init, buf in zip(self._initial, self._buffers):
                    for s0, s in zip(init, buf):
                        s.copy_(value(s0.detach(), s))
        else:  # autograd tensors: a new value (the kept rows stay differentiable)
            self._state = [
                [value(s0, s) for s0, s in zip(i, c)] for i, c in zip(self._initial, self._state)
            ]

    # ---- one step ----------------------------------------------------------------------------
    def __call__(self, x: Tensor, return_trace: bool = False):
        """x (B, input_size), or (input_size,) for a stream of batch 1 -> y (B, H_out) (or
        (H_out,)), a fresh tensor, and a Trace of this one step (T = 1) with return_trace=True."""
        layer = self.layer
        unbatched = isinstance(x, Tensor) and x.dim() == 1
        if unbatched:
            x = x[None]
        if not (isinstance(x, Tensor) and x.shape == (self.batch_size, layer.input_size)):
            self._refuse(x, unbatched)
        # what decides the step and its prepared weights; equal on almost every call
        state_grad = self._state is not self._buffers and self._state[0][0].requires_grad
        params = [(id(p), p._version, p.requires_grad, p.data_ptr(), p.dtype)
                  for p in layer._parameters.values()]  # fmt: skip
        key = (
            layer.spec, layer.training, layer.engine, layer.weight_drop, torch.is_grad_enabled(),
            torch.is_inference_mode_enabled(), x.requires_grad, state_grad, x.dtype, x.device,
            *params,
        )  # fmt: skip
        if key != self._key:
            self._prepare(x, key, state_grad)
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
            names = layer.cell.trace_gates(layer.opts)
            gates = self._compiled.gates(names) if return_trace else {}
        else:
            y, gates = self._reference(x)
        if not return_trace:
            return y[0] if unbatched else y
        return (y[0] if unbatched else y), self._trace(gates, unbatched)

    def _refuse(self, x, unbatched: bool) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"a stream step takes a Tensor, got {type(x).__name__}")
        B, want = self.batch_size, self.layer.input_size
        shapes = f"({B}, {want})" + (f" or ({want},)" if B == 1 else "")
        got = tuple(x.shape[1:]) if unbatched else tuple(x.shape)
        raise ValueError(
            f"a stream step takes one time step of shape {shapes} (batch, input_size), "
            f"got {got}; for a whole sequence call the layer itself"
        )

    def _prepare(self, x: Tensor, key: tuple, state_grad: bool) -> None:
        """Choose the step for this call's conditions and lay its weights out (once per key)."""
        layer = self.layer
        w = layer.weight_ih_l0
        inputs._check_tensor("input", x, w.dtype, w.device)
        self._conform(w)
        needs_grad = (
            x.requires_grad or state_grad or any(p.requires_grad for p in layer.parameters())
        )
        if layer.engine == "reference":
            why_not = "engine='reference' was requested"
        else:
            why_not = stream_step.unsupported(layer.spec, layer.training, x)
            if why_not is None and torch.is_grad_enabled() and needs_grad:
                why_not = "gradients are needed (use torch.no_grad() for the fast step)"
            if why_not is not None:
                why_not = f"the compiled step cannot run this: {why_not}"
        self._params = [gather(layer, names) for names in layer._names]
        if layer.training and layer.weight_drop > 0:  # DropConnect: one mask per stream
            if self._drop is None:
                like = self._params[0].w_hh
                self._drop = [dropout_mask(tuple(p.w_hh.shape), layer.weight_drop, like)
                              for p in self._params]  # fmt: skip
            for p, mask in zip(self._params, self._drop):
                p.w_hh = p.w_hh * mask
        if why_not is None:
            self._compiled = stream_step.CompiledStep.prepare(
                layer.spec, self._params, self._buffers
            )
            self._choice = ("fused", "the compiled step (weights laid out once, one call per step)")
        else:
            self._compiled = None
            self._choice = ("reference", why_not)
        self._key = key

    def _conform(self, w: Tensor) -> None:
        """The state follows the layer: to its dtype and device after layer.to(...), and out of
        inference mode (a stream begun under torch.inference_mode holds inference tensors)."""
        buf = self._buffers[0][0]
        stale = buf.dtype != w.dtype or buf.device != w.device
        stale |= buf.is_inference() and not torch.is_inference_mode_enabled()
        if not stale:
            return

        def conform(s: Tensor) -> Tensor:
            s = s.to(device=w.device, dtype=w.dtype)
            return s.clone() if s.is_inference() else s  # a clone outside it is an ordinary one

        with torch.inference_mode(False):
            owned = self._state is self._buffers
            self._initial = [[conform(s) for s in layer] for layer in self._initial]
            current = [[conform(s) for s in layer] for layer in self._state]
            self._buffers = _buffers_like(current)
            self._state = self._buffers if owned else current
        self._rmask = self._drop = None  # drawn again, in the new dtype

    def _reference(self, x: Tensor) -> tuple[Tensor, dict]:
        """One step through the reference engine's cell_step, layer by layer."""
        layer = self.layer
        training = layer.training
        H, H_out = layer.hidden_size, layer.proj_size or layer.hidden_size
        B = x.shape[0]
        if not (training and layer.recurrent_dropout > 0):
            self._rmask = None
        elif self._rmask is None:  # variational: one mask per sequence
            self._rmask = [dropout_mask((B, H_out), layer.recurrent_dropout, x)
                           for _ in self._state]  # fmt: skip
        zc, zh = layer.zoneout.cell, layer.zoneout.hidden
        rates = (0.0, 0.0) if training else layer.zoneout.by_state  # evaluation: expectation
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
        # y is a copy, as the compiled step's: writing into it must not change the state
        return inp.clone(), {g: torch.stack([gates[g] for gates in per_layer]) for g in names}

    def _trace(self, gates: dict[str, Tensor], unbatched: bool) -> Trace:
        """This step as a Trace with T = 1, laid out as forward's: (L, D=1, T=1, B, *), or
        (L, 1, B, 1, *) with batch_first, (L, 1, 1, *) unbatched."""
        cell, batch_first = self.layer.cell, self.layer.batch_first
        names = cell.trace_gates(self.layer.opts)

        def one_step(t: Tensor) -> Tensor:  # (L, B, *) -> the layout above, a copy
            t = t[:, None, :, None] if batch_first else t[:, None, None]
            t = t.clone()
            return t.squeeze(3 if not batch_first else 2) if unbatched else t

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
            batch_first=batch_first,
            batched=not unbatched,
        )


def _buffers_like(states: list[list[Tensor]]) -> list[list[Tensor]]:
    """Detached, contiguous copies of per-layer states (what the compiled step writes)."""
    return [
        [s.detach().clone(memory_format=torch.contiguous_format) for s in layer_state]
        for layer_state in states
    ]


def _batch_of(hx) -> int:
    first = hx[0] if isinstance(hx, (tuple, list)) and hx else hx
    if not isinstance(first, Tensor) or first.dim() != 3:
        raise ValueError(
            "a stream's hx is batched, as forward's: h_0 (num_layers, B, H_out) and, for LSTM, "
            "c_0 (num_layers, B, hidden_size)"
        )
    return first.shape[1]
