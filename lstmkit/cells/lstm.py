"""The LSTM cell (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).

    i_t = sigmoid(xp_i + hp_i + w_ci * c_{t-1})      input gate: how much to write
    f_t = sigmoid(xp_f + hp_f + w_cf * c_{t-1})      forget gate: how much of the cell to keep
    g_t = tanh(xp_g + hp_g)                          candidate values
    c_t = f_t * c_{t-1} + i_t * g_t                  the cell state carried along the sequence
    o_t = sigmoid(xp_o + hp_o + w_co * c_t)          output gate (its peephole sees the new cell)
    h_t = W_hr (o_t * tanh(LN_c(c_t)))               hidden state; W_hr only with proj_size > 0

The w_c* terms are the peephole connections (Gers & Schmidhuber 2000), present only with
peephole=True. With coupled=True (CIFG, Greff et al. 2017) there are no input-gate weights and
i_t = 1 - f_t. LN_c is the layer norm on the cell of Ba et al. 2016, only with layer_norm=True.
With every option off this is exactly torch.nn.LSTM's step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells.base import Cell, CellOptions, LayerParams, layer_norm
from lstmkit.cells.gates import LSTM_GATES, lstm_layout, peephole_layout, split


def lstm_pointwise(
    pre: Tensor, c_prev: Tensor, peep: Tensor | None = None, coupled: bool = False
) -> tuple[Tensor, dict[str, Tensor]]:
    """The gate arithmetic. pre (B, G*H) = xp + hp; c_prev (B, H). Returns c_t and {i, f, g, o}.
    Any leading dims work in place of B (the gates are blocks of the last dimension)."""
    blocks = split(pre, lstm_layout(coupled))
    w = split(peep, peephole_layout(coupled)) if peep is not None else {}

    def pre_activation(gate: str, c: Tensor) -> Tensor:  # + the peephole term when present
        return blocks[gate] + w[gate] * c if w else blocks[gate]

    f = torch.sigmoid(pre_activation("f", c_prev))
    i = 1.0 - f if coupled else torch.sigmoid(pre_activation("i", c_prev))
    g = torch.tanh(blocks["g"])
    c = f * c_prev + i * g
    o = torch.sigmoid(pre_activation("o", c))  # the output peephole sees the new cell
    return c, {"i": i, "f": f, "g": g, "o": o}


def lstm_output(c: Tensor, o: Tensor, p: LayerParams) -> Tensor:
    """h_t = W_hr (o_t * tanh(LN_c(c_t))), (B, H) -> (B, H_out)."""
    squashed = torch.tanh(c if p.ln_c_w is None else layer_norm(c, p.ln_c_w, p.ln_c_b))
    h = o * squashed
    return h if p.w_hr is None else h @ p.w_hr.t()


def lstm_pointwise_(
    act: Tensor, c_prev: Tensor, c_out: Tensor, peep: Tensor | None = None, coupled: bool = False
) -> dict[str, Tensor]:
    """lstm_pointwise in place, for engines that run without autograd (same equations).

    act (B, G*H) holds pre = xp + hp on entry and the gate activations, in layout order, on
    return; c_t is written to c_out (B, H). Returns the gate blocks {f, g, o} (+ i unless
    coupled) as views of act. No fresh (B, H) tensors: per step that allocation costs more than
    the arithmetic at small sizes. Like lstm_pointwise, any leading dims work in place of B.
    """
    layout = lstm_layout(coupled)
    blocks = split(act, layout)
    f, g, o = blocks["f"], blocks["g"], blocks["o"]
    if peep is None:  # the sigmoid gates before g are adjacent columns: one call for both
        act[..., : layout.index("g") * g.shape[-1]].sigmoid_()
    else:
        w = split(peep, peephole_layout(coupled))
        for name in peephole_layout(coupled)[:-1]:  # i and f see c_{t-1}; o waits for c_t
            blocks[name].addcmul_(w[name], c_prev).sigmoid_()
    g.tanh_()
    if coupled:  # c = f c_prev + (1 - f) g = g + f (c_prev - g)
        torch.sub(c_prev, g, out=c_out).mul_(f).add_(g)
    else:
        torch.mul(f, c_prev, out=c_out).addcmul_(blocks["i"], g)
    if peep is not None:
        o.addcmul_(w["o"], c_out)
    o.sigmoid_()
    return blocks


def lstm_output_(c: Tensor, o: Tensor, p: LayerParams, out: Tensor, work: Tensor) -> Tensor:
    """lstm_output into `out` (B, H_out), using `work` (B, H) as scratch; returns out."""
    if p.ln_c_w is None:
        torch.tanh(c, out=work)
    else:
        work.copy_(layer_norm(c, p.ln_c_w, p.ln_c_b)).tanh_()
    if p.w_hr is None:
        return torch.mul(o, work, out=out)
    return torch.mm(work.mul_(o), p.w_hr.t(), out=out)


class LSTMCellKind(Cell):
    name = "LSTM"
    state_names = ("h", "c")

    supports_projection = True
    supports_peephole = True
    supports_coupled = True

    def torch_mode(self, opts: CellOptions) -> str | None:
        return None if opts.coupled else "LSTM"

    def layout(self, opts: CellOptions) -> tuple[str, ...]:
        return lstm_layout(opts.coupled)

    def trace_gates(self, opts: CellOptions) -> tuple[str, ...]:
        return LSTM_GATES

    def step(
        self, xp: Tensor, hp: Tensor, state: tuple[Tensor, ...], p: LayerParams, opts: CellOptions
    ) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
        _, c_prev = state
        c, gates = lstm_pointwise(xp + hp, c_prev, p.w_peep, opts.coupled)
        return (lstm_output(c, gates["o"], p), c), gates


LSTM_CELL = LSTMCellKind()  # the math object; lstmkit.LSTM is the module
