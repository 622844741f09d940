"""LSTMCell, GRUCell, RNNCell: one step, drop-in for torch.nn's *Cell modules.

Parameters weight_ih (G*H, I), weight_hh (G*H, H), bias_ih / bias_hh (G*H) as torch.nn; the
structural LSTM extras (forget_bias, peephole, coupled, layer_norm) and layer_norm for GRU / RNN
are available too. Step-level regularisers (recurrent dropout, zoneout) need a whole sequence,
so they live on the sequence layers. forward(input, hx=None, return_gates=False): input (B, I)
or (I,); with return_gates=True a dict {gate: (B, H)} is returned as an extra element.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lstmkit.cells import GRU_CELL, LSTM_CELL, RNN_CELL
from lstmkit.cells.base import Cell, CellOptions, input_projection, recurrent_projection
from lstmkit.nn import checks
from lstmkit.nn.inputs import _check_tensor, split_states
from lstmkit.nn.params import ParamSpec, gather, init_params, register_params


class CellBase(nn.Module):
    cell: Cell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        nonlinearity: str = "tanh",
        forget_bias: float | None = None,
        peephole: bool = False,
        coupled: bool = False,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        forget_bias = checks.check_cell_options(
            self.cell,
            bias=bias,
            nonlinearity=nonlinearity,
            forget_bias=forget_bias,
            peephole=peephole,
            coupled=coupled,
            layer_norm=layer_norm,
        )
        self.input_size = checks.check_size("input_size", input_size)
        self.hidden_size = checks.check_size("hidden_size", hidden_size)
        self.bias = bias
        self.nonlinearity = nonlinearity
        self.forget_bias = forget_bias
        self.opts = CellOptions(coupled=coupled, nonlinearity=nonlinearity)
        self._spec = ParamSpec(
            self.cell, self.opts, input_size, hidden_size, 0, bias, peephole, layer_norm
        )
        self._names = register_params(self, self._spec, "", {"device": device, "dtype": dtype})
        if not bias:  # torch.nn registers these as None
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_params(self, self._spec, self._names, self.forget_bias)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s

    def forward(self, input: Tensor, hx=None, return_gates: bool = False):
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if input.size(-1) != self.input_size:
            raise RuntimeError(
                "input has inconsistent input_size: "
                f"got {input.size(-1)} expected {self.input_size}"
            )
        w = self.weight_ih
        _check_tensor("input", input, w.dtype, w.device)
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        B = x.shape[0]
        many = len(self.cell.state_names) > 1
        if hx is None:
            zeros = torch.zeros(B, self.hidden_size, dtype=x.dtype, device=x.device)
            state = (zeros,) * len(self.cell.state_names)
        else:
            state = split_states(name, hx, self.cell.state_names)
            for i, s in enumerate(state):
                label = f"hx[{i}]" if many else "hx"
                if s.dim() != input.dim():
                    raise ValueError(
                        f"{name}: Expected {label} to be {input.dim()}D like the input, "
                        f"got {s.dim()}D instead"
                    )
                if s.shape[-1] != self.hidden_size or (batched and s.shape[0] != B):
                    want = (B, self.hidden_size) if batched else (self.hidden_size,)
                    raise RuntimeError(f"Expected {label} size {want}, got {list(s.shape)}")
                _check_tensor(label, s, w.dtype, w.device)
            state = state if batched else tuple(s.unsqueeze(0) for s in state)
        p = gather(self, self._names)
        new, gates = self.cell.step(
            input_projection(x, p), recurrent_projection(state[0], p), state, p, self.opts
        )
        if not batched:
            new = tuple(s.squeeze(0) for s in new)
            gates = {k: v.squeeze(0) for k, v in gates.items()}
        out = new if many else new[0]
        return (out, gates) if return_gates else out


class LSTMCell(CellBase):
    """One LSTM step: (input, (h, c)) -> (h', c'). Extras: forget_bias, peephole, coupled,
    layer_norm (as lstmkit.LSTM)."""

    cell = LSTM_CELL

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        forget_bias: float | None = None,
        peephole: bool = False,
        coupled: bool = False,
        layer_norm: bool = False,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            bias,
            device,
            dtype,
            forget_bias=forget_bias,
            peephole=peephole,
            coupled=coupled,
            layer_norm=layer_norm,
        )


class GRUCell(CellBase):
    """One GRU step: (input, h) -> h'. Extra: layer_norm."""

    cell = GRU_CELL

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        layer_norm: bool = False,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, device, dtype, layer_norm=layer_norm)


class RNNCell(CellBase):
    """One Elman RNN step: (input, h) -> h'. Extra: layer_norm."""

    cell = RNN_CELL

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device=None,
        dtype=None,
        *,
        layer_norm: bool = False,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            bias,
            device,
            dtype,
            nonlinearity=nonlinearity,
            layer_norm=layer_norm,
        )
