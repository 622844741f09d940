"""The compiled step of a whole stack (csrc/stream_step.cpp), with its weights prepared once.

A stream (lstmkit.nn.stream) runs one time step per call. Through the layer's forward that step
would redo the per-call work of a whole sequence (checks, weight layouts: torch.nn.LSTM spends
122 us per call at B = 1 on a 64 x 128 layer, where the token's matmul takes 6.5 us;
benchmarks/results/streaming.md); through eager torch ops it is about eight calls per layer.
Here the weights are laid out once, [W_ih | W_hh]^T (I + H_out, G*H) so a layer's two products
are one matmul, with b_ih + b_hh folded, and each step is one call into C++ that runs every
layer: the matmuls in ATen, the gate arithmetic in the fused engine's own kernels.

It computes LSTM (peephole, coupled, projection), GRU and RNN (tanh, relu) without layer norm
or zoneout, on CPU in float32 / float64, without autograd; `unsupported` names what else it
lacks, and the stream then runs the reference engine's step (any cell and option, with
gradients). Measured speeds: benchmarks/results/streaming.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lstmkit.cells.base import LayerParams
from lstmkit.cells.gates import GRU_GATES, RNN_GATES, lstm_layout, split
from lstmkit.cells.gru import GRU_CELL
from lstmkit.cells.lstm import LSTM_CELL
from lstmkit.cells.regularizers import ZoneoutRates
from lstmkit.cells.rnn import RNN_CELL
from lstmkit.engines.base import RecurrentSpec
from lstmkit.engines.cpu_loops import cpu_loops

# csrc/stream_step.cpp's `kind` of each cell it knows (the RNN's by its nonlinearity)
KINDS = {LSTM_CELL: {"tanh": 0}, GRU_CELL: {"tanh": 1}, RNN_CELL: {"tanh": 2, "relu": 3}}


def unsupported(spec: RecurrentSpec, training: bool, like: Tensor) -> str | None:
    """None when the compiled step computes this stack exactly; else why not, in a few words."""
    if spec.cell not in KINDS:
        return f"no compiled step for the {spec.cell.name} cell (it knows LSTM, GRU, RNN)"
    if like.device.type != "cpu" or like.dtype not in (torch.float32, torch.float64):
        return f"the compiled step runs on CPU in float32 / float64, not {like.device} {like.dtype}"
    if spec.layer_norm:
        return "layer norm is not in the compiled step"
    if ZoneoutRates(*spec.zoneout).active:
        return "zoneout is not in the compiled step"
    stochastic = spec.recurrent_dropout > 0 or (spec.dropout > 0 and spec.num_layers > 1)
    if training and stochastic:
        return "dropout in training draws masks the compiled step does not"
    if cpu_loops() is None:
        return "the compiled CPU loops are not built here (see lstmkit.engines.cpu_loops)"
    return None


@dataclass
class CompiledStep:
    """A prepared stack for batch B: the C++ StreamStep (csrc/stream_step.cpp) holding the laid
    out weights, scratch buffers and the caller's state buffers, which `run` advances in place.
    Built again when a weight changes (the caller tracks that)."""

    kernel: object  # the C++ StreamStep
    layout: tuple[str, ...]  # the cell's gate blocks, in storage order (lstmkit.cells.gates)
    coupled: bool
    act: list[Tensor]  # per layer (B, G*H): the last step's gate activations

    @classmethod
    @torch.no_grad()
    def prepare(
        cls, spec: RecurrentSpec, params: list[LayerParams], state: list[list[Tensor]]
    ) -> CompiledStep:
        """params: one LayerParams per layer; state[l] = [h (B, H_out), c (B, H) for LSTM],
        contiguous buffers the step will write."""
        gru = spec.cell is GRU_CELL
        H = spec.hidden_size
        G = spec.cell.num_blocks(spec.opts)
        B = state[0][0].shape[0]
        like = params[0].w_ih
        none = like.new_empty(0)  # "no tensor" in the C++ lists

        def t(x: Tensor | None) -> Tensor:
            return none if x is None else x.detach().t().contiguous()

        def folded(p: LayerParams) -> Tensor:
            if p.b_ih is None:
                return none
            return (p.b_ih if gru else p.b_ih + p.b_hh).detach().contiguous()

        w, w2, b, b2, peep, w_hr, xh, act, m = ([] for _ in range(9))
        for p in params:
            I, P = p.w_ih.shape[1], p.w_hh.shape[1]
            if gru:  # r scales W_hn h + b_hn: the two products stay apart
                w.append(t(p.w_ih))
                w2.append(t(p.w_hh))
                b2.append(none if p.b_hh is None else p.b_hh.detach().contiguous())
                xh.append(like.new_empty(B, G * H))  # W_hh h + b_hh
            else:  # [x | h] [W_ih | W_hh]^T: one matmul
                w.append(torch.cat([p.w_ih, p.w_hh], dim=1).detach().t().contiguous())
                w2.append(none)
                b2.append(none)
                xh.append(like.new_empty(B, I + P))
            b.append(folded(p))
            peep.append(none if p.w_peep is None else p.w_peep.detach().contiguous())
            w_hr.append(t(p.w_hr))
            act.append(like.new_empty(B, G * H))
            m.append(like.new_empty(B, H) if p.w_hr is not None else none)
        h = [s[0] for s in state]
        c = [s[1] if len(s) > 1 else none for s in state]
        kind = KINDS[spec.cell][spec.opts.nonlinearity if spec.cell is RNN_CELL else "tanh"]
        coupled = spec.opts.coupled
        args = (kind, coupled, w, w2, b, b2, peep, w_hr, xh, act, m, h, c)
        layout = spec.cell.layout(spec.opts)
        # csrc/stream_step.cpp reads the blocks in the cells' storage order (lstmkit.cells.gates)
        order = {LSTM_CELL: lstm_layout(coupled), GRU_CELL: GRU_GATES, RNN_CELL: RNN_GATES}[
            spec.cell
        ]
        assert layout == order, f"the compiled step's gate order {order} is not {layout}"
        return cls(cpu_loops().make_stream_step(*args), layout, coupled, act)

    def run(self, x: Tensor) -> Tensor:
        """x (B, I) -> the last layer's new h (B, H_out), a fresh tensor; the state buffers are
        advanced in place and this step's gate activations left in self.act."""
        return self.kernel.step(x)

    def gates(self, names: tuple[str, ...]) -> dict[str, Tensor]:
        """This step's activations {gate: (L, B, H)} (copies), for a step's trace."""
        if not names:  # the RNN: no gates
            return {}
        blocks = split(torch.stack(self.act), self.layout)  # (L, B, G*H) -> {gate: (L, B, H)}
        if self.coupled:  # CIFG: i = 1 - f
            blocks["i"] = 1.0 - blocks["f"]
        return {g: blocks[g].clone() for g in names}
