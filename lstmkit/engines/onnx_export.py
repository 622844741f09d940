"""The ONNX engine: what torch.onnx.export (TorchScript) writes for LSTMs torch's exporter lacks.

Active only while exporting (torch.onnx.is_in_onnx_export()). It writes ONNX's own LSTM operator
for the peephole and the coupled (CIFG, ONNX's `input_forget=1`) LSTM, one operator per layer
and direction, so the exported model takes any batch size and sequence length. Plain LSTM / GRU
/ RNN go to the native engine (torch's exporter maps torch's kernels to ONNX's operators); what
ONNX's operators cannot express (layer norm, projections, zoneout, traces) goes to the reference
engine, exported as its loop unrolled for the exported length.

ONNX's LSTM (opset 7+): gate blocks ordered i, o, f, c (torch's: i, f, g, o); W (D, 4H, I),
R (D, 4H, H), B (D, 8H) = [Wb, Rb], P (D, 3H) peepholes ordered i, o, f; Y (T, D, B, H).
The coupled cell (i = 1 - f) is written as a plain ONNX LSTM whose input-gate rows are the
forget gate's negated: sigmoid(-x) = 1 - sigmoid(x). Not `input_forget=1`, whose meaning the
spec leaves open: onnxruntime computes f = 1 - i with it (measured), the reverse of CIFG's.
While tracing, the operator's eager implementation (the cell's own equations) gives the values.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lstmkit.cells.base import CellOptions, LayerParams
from lstmkit.cells.gates import LSTM_GATES, PEEPHOLE_GATES, lstm_layout, peephole_layout, split
from lstmkit.cells.lstm import LSTM_CELL, lstm_output, lstm_pointwise
from lstmkit.engines.base import DirectionCall, DirectionResult, Engine, RecurrentCall

OPSET = 14


@torch.library.custom_op("lstmkit::onnx_lstm", mutates_args=())
def onnx_lstm(
    x: Tensor,  # (T, B, I)
    h0: Tensor,  # (B, H)
    c0: Tensor,  # (B, H)
    w: Tensor,  # (4H, I) ONNX order i, o, f, c
    r: Tensor,  # (4H, H)
    b: Tensor,  # (8H) W_b then R_b
    p: Tensor,  # (3H) peepholes i, o, f (zeros: none)
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """-> Y (T, B, H), Y_h (B, H), Y_c (B, H): ONNX LSTM's semantics, computed eagerly."""
    H = h0.shape[-1]
    onnx_order = ("i", "o", "f", "g")  # ONNX's i, o, f, c
    w_, r_ = dict(zip(onnx_order, w.split(H))), dict(zip(onnx_order, r.split(H)))
    b_ = dict(zip(onnx_order, (b[: 4 * H] + b[4 * H :]).split(H)))
    p_ = dict(zip(("i", "o", "f"), p.split(H)))
    W = torch.cat([w_[g] for g in LSTM_GATES])  # back to torch's i, f, g, o
    R = torch.cat([r_[g] for g in LSTM_GATES])
    bias = torch.cat([b_[g] for g in LSTM_GATES])
    peep = torch.cat([p_[g] for g in PEEPHOLE_GATES])
    lp = LayerParams(W, R)
    h, c, out = h0, c0, []
    for t in range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0]):
        c, gates = lstm_pointwise(x[t] @ W.t() + h @ R.t() + bias, c, peep)
        h = lstm_output(c, gates["o"], lp)
        out.append(h)
    Y = torch.stack(out[::-1] if reverse else out)
    return Y, h.clone(), c.clone()


@onnx_lstm.register_fake
def _(x, h0, c0, w, r, b, p, reverse):
    return (
        x.new_empty(x.shape[0], x.shape[1], h0.shape[-1]),
        torch.empty_like(h0),
        torch.empty_like(c0),
    )


def _symbolic(g, x, h0, c0, w, r, b, p, reverse):
    from torch.onnx import symbolic_helper

    H = symbolic_helper._get_tensor_sizes(r)[-1]  # R (4H, H): a constant, unlike h0
    rev = symbolic_helper._maybe_get_const(reverse, "b")
    unsq = [
        g.op("Unsqueeze", t, g.op("Constant", value_t=torch.tensor([0])))
        for t in (w, r, b, p, h0, c0)
    ]
    w1, r1, b1, p1, h1, c1 = unsq
    y, y_h, y_c = g.op(
        "LSTM", x, w1, r1, b1, symbolic_helper._optional_input_placeholder_tensor(g), h1, c1, p1,
        hidden_size_i=H,
        direction_s="reverse" if rev else "forward", outputs=3,
    )  # fmt: skip
    axis = g.op("Constant", value_t=torch.tensor([1]))
    axis0 = g.op("Constant", value_t=torch.tensor([0]))
    return g.op("Squeeze", y, axis), g.op("Squeeze", y_h, axis0), g.op("Squeeze", y_c, axis0)


torch.onnx.register_custom_op_symbolic("lstmkit::onnx_lstm", _symbolic, OPSET)


def onnx_weights(p: LayerParams, opts: CellOptions, bias: bool):
    """lstmkit's layer parameters -> ONNX LSTM's (W, R, B, P), blocks reordered to i, o, f, c;
    coupled: the input gate's rows (and peephole) are the forget gate's negated."""
    layout = lstm_layout(opts.coupled)

    def rows(t: Tensor) -> dict[str, Tensor]:  # (G*H, *) -> {gate: (H, *)}
        return dict(zip(layout, t.chunk(len(layout), dim=0)))

    H = p.w_hh.shape[0] // len(layout)
    zero = p.w_hh.new_zeros(H)
    w, r = rows(p.w_ih), rows(p.w_hh)
    bi = rows(p.b_ih) if bias else {"f": zero, "g": zero, "o": zero, "i": zero}
    bh = rows(p.b_hh) if bias else {"f": zero, "g": zero, "o": zero, "i": zero}
    peep = split(p.w_peep, peephole_layout(opts.coupled)) if p.w_peep is not None else {}
    peep = {k: peep.get(k, zero) for k in ("f", "o")} | {"i": peep.get("i", zero)}
    if opts.coupled:  # i = 1 - f = sigmoid(-(pre_f + w_cf c))
        for blocks in (w, r, bi, bh, peep):
            blocks["i"] = -blocks["f"]
    order = ("i", "o", "f", "g")
    W = torch.cat([w[k] for k in order])
    R = torch.cat([r[k] for k in order])
    B = torch.cat([bi[k] for k in order] + [bh[k] for k in order])
    P = torch.cat([peep[k] for k in ("i", "o", "f")])
    return W, R, B, P


class ONNXEngine(Engine):
    name = "onnx"
    priority = 90  # below native (torch's own exporter path), above the others: export only

    def unsupported(self, call: RecurrentCall) -> str | None:
        if not torch.onnx.is_in_onnx_export():
            return "only used by torch.onnx.export"
        if torch.compiler.is_compiling():  # torch.onnx.export(dynamo=True) traces with dynamo
            return "its operator is mapped for the TorchScript exporter (dynamo=False) only"
        if call.cell is not LSTM_CELL:
            return f"no ONNX operator for the {call.cell.name} cell here"
        if call.layer_norm or call.proj_size or call.has_step_regularizers:
            return "layer norm, projections, recurrent dropout and zoneout are not in ONNX's LSTM"
        if call.return_trace or call.lengths is not None:
            return "ONNX's LSTM returns no gate traces; lengths are not mapped"
        return None

    def run_direction(self, call: RecurrentCall, d: DirectionCall) -> DirectionResult:
        W, R, B, P = onnx_weights(d.params, call.opts, call.bias)
        Y, h, c = onnx_lstm(d.x, d.state[0], d.state[1], W, R, B, P, d.reverse)
        return DirectionResult(Y, (h, c))
