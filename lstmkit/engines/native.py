"""The native engine: torch's own fused kernels (oneDNN on CPU, cuDNN on GPU) via torch._VF.

These are the exact kernels torch.nn.LSTM / GRU / RNN call, so results are identical to torch.nn.
They know only the plain cells: no peepholes, layer norm, coupled gate, recurrent dropout,
zoneout or traces. Weight drop is served (the dropped W_hh is just another weight), and so is
dropout between layers (with torch's own random masks).
"""

from __future__ import annotations

import torch
from torch import _VF, Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lstmkit.engines.base import Engine, RecurrentCall, RecurrentResult


def flat_weights(call: RecurrentCall) -> list[Tensor]:
    """Weights in the order torch's kernels expect: per layer and direction w_ih, w_hh,
    [b_ih, b_hh], [w_hr]."""
    flat: list[Tensor] = []
    for p in call.params:
        flat += [p.w_ih, p.w_hh]
        if call.bias:
            flat += [p.b_ih, p.b_hh]
        if p.w_hr is not None:
            flat.append(p.w_hr)
    return flat


# torch's mode name (Cell.torch_mode) -> its kernel; a cell without an entry is unsupported
KERNELS = {"LSTM": _VF.lstm, "GRU": _VF.gru, "RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu}


def _hx_arg(hx: tuple[Tensor, ...]):
    return hx if len(hx) > 1 else hx[0]


def _results(res) -> tuple[Tensor, tuple[Tensor, ...]]:
    return res[0], tuple(res[1:])


class NativeEngine(Engine):
    name = "native"
    priority = 100
    # aot_autograd / inductor cannot trace torch's RNN kernels (aten.mkldnn_rnn_layer saves
    # non-tensors); under torch.compile they run eagerly outside the graph, as torch.nn.LSTM's do
    traceable = False

    def unsupported(self, call: RecurrentCall) -> str | None:
        extras = {"peephole": call.peephole, "layer_norm": call.layer_norm}
        extras["coupled"] = call.opts.coupled
        if any(extras.values()):
            on = " / ".join(k for k, v in extras.items() if v)
            return f"{on} is not in torch's kernels"
        if call.cell.torch_mode(call.opts) not in KERNELS:
            return f"torch has no kernel for the {call.cell.name} cell"
        if call.return_trace:
            return "gate traces requested (torch's kernels do not expose gates)"
        if call.proj_size and torch.onnx.is_in_onnx_export():
            return "torch's ONNX exporter has no LSTM with projections"
        if call.has_step_regularizers:
            return "recurrent dropout or zoneout changes the step itself"
        return None

    def run(self, call: RecurrentCall) -> RecurrentResult:
        if torch.compiler.is_compiling() and not torch.compiler.is_exporting():
            return _run_eagerly(call)
        return _run(call)


def _run(call: RecurrentCall) -> RecurrentResult:
    """The whole stack through torch's kernel, exactly as torch.nn calls it."""
    kernel, weights = KERNELS[call.cell.torch_mode(call.opts)], flat_weights(call)
    args = (call.bias, call.num_layers, call.dropout, call.training, call.bidirectional)
    if call.lengths is None:
        out, h_n = _results(kernel(call.x, _hx_arg(call.hx), weights, *args, call.batch_first))
        return RecurrentResult(out, h_n)
    packed = pack_padded_sequence(
        call.x, call.lengths, batch_first=call.batch_first, enforce_sorted=False
    )
    hx = tuple(h.index_select(1, packed.sorted_indices) for h in call.hx)
    data, h_n = _results(kernel(packed.data, packed.batch_sizes, _hx_arg(hx), weights, *args))
    out, _ = pad_packed_sequence(
        packed._replace(data=data),
        batch_first=call.batch_first,
        total_length=call.x.shape[1 if call.batch_first else 0],
    )
    h_n = tuple(h.index_select(1, packed.unsorted_indices) for h in h_n)
    return RecurrentResult(out, h_n)


# torch._disable_dynamo imports dynamo only when called (torch.compiler.disable at import time
# would add ~1 s to `import lstmkit`, and import Triton in compiler mode before its tests can
# choose the interpreter)
_run_eagerly = torch._disable_dynamo(_run)
