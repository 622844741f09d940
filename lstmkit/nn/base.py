"""RecurrentBase: the constructor, parameters and forward contract shared by LSTM, GRU and RNN.

The forward pass is three steps: `inputs.prepare` checks and canonicalises what the caller gave,
`engines.select` picks who computes, and `inputs.restore_*` gives the result back in the caller's
form. Which engine ran, and why, is kept in `last_engine` / `last_engine_reason`.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import fields

from torch import Tensor, nn

from lstmkit import engines
from lstmkit.cells.base import Cell, CellOptions
from lstmkit.cells.regularizers import StepMasks, bernoulli_mask, drop_weight, dropout_mask
from lstmkit.engines.base import RecurrentCall, RecurrentSpec
from lstmkit.nn import inputs
from lstmkit.nn.params import ParamSpec, gather, init_params, register_params


def _check_rate(name: str, value, upper_inclusive: bool = True) -> float:
    ok = isinstance(value, numbers.Number) and not isinstance(value, bool)
    ok = ok and 0 <= value <= 1 and (upper_inclusive or value < 1)
    if not ok:
        bound = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"{name} should be a number in range {bound}, got {value!r}")
    return float(value)


def _zoneout_pair(zoneout, cell: Cell) -> tuple[float, float]:
    """A rate or a (cell, hidden) pair -> checked (cell, hidden) rates (cell 0 without a c)."""
    if isinstance(zoneout, (tuple, list)):
        if len(zoneout) != 2:
            raise ValueError(f"zoneout should be a rate or a (cell, hidden) pair, got {zoneout!r}")
        zoneout_c, zoneout_h = (_check_rate("zoneout", z) for z in zoneout)
    else:
        zoneout_c = zoneout_h = _check_rate("zoneout", zoneout)
    return (zoneout_c if "c" in cell.state_names else 0.0), zoneout_h


def _check_size(name: str, value, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be greater than zero")
    return value


class RecurrentBase(nn.Module):
    cell: Cell  # set by each subclass

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        nonlinearity: str = "tanh",
        forget_bias: float | None = None,
        peephole: bool = False,
        coupled: bool = False,
        layer_norm: bool = False,
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        zoneout: float | tuple[float, float] = 0.0,
        engine: str = "auto",
    ) -> None:
        super().__init__()
        if (
            not isinstance(dropout, numbers.Number)
            or isinstance(dropout, bool)
            or not 0 <= dropout <= 1
        ):
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of an "
                "element being zeroed"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                f"num_layers={num_layers}",
                stacklevel=3,
            )
        for flag_name, flag in (
            ("bias", bias),
            ("batch_first", batch_first),
            ("bidirectional", bidirectional),
            ("peephole", peephole),
            ("coupled", coupled),
            ("layer_norm", layer_norm),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{flag_name} should be of type bool, got: {type(flag).__name__}")
        self.input_size = _check_size("input_size", input_size)
        self.hidden_size = _check_size("hidden_size", hidden_size)
        if not isinstance(num_layers, int) or num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if not isinstance(proj_size, int) or proj_size < 0:
            raise ValueError(
                "proj_size should be a positive integer or zero to disable projections"
            )
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if proj_size and not self.cell.supports_projection:
            raise ValueError(f"proj_size argument is only supported for LSTM, not {self.cell.name}")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        for flag_name, flag, ok in (
            ("peephole", peephole, self.cell.supports_peephole),
            ("coupled", coupled, self.cell.supports_coupled),
        ):
            if flag and not ok:
                raise ValueError(f"{flag_name}=True: the {self.cell.name} cell has no such option")
        if forget_bias is not None and "f" not in self.cell.layout(CellOptions(coupled=coupled)):
            raise ValueError(f"forget_bias: the {self.cell.name} cell has no forget gate 'f'")
        if forget_bias is not None and not bias:
            raise ValueError("forget_bias needs bias=True: the forget gate's bias is where it goes")
        zoneout_c, zoneout_h = _zoneout_pair(zoneout, self.cell)
        engines.check_engine_name(engine)

        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.nonlinearity = nonlinearity
        self.forget_bias = forget_bias
        self.peephole = peephole
        self.coupled = coupled
        self.layer_norm = layer_norm
        self.recurrent_dropout = _check_rate("recurrent_dropout", recurrent_dropout)
        self.weight_drop = _check_rate("weight_drop", weight_drop, upper_inclusive=False)
        self.zoneout = (zoneout_c, zoneout_h)
        self.engine = engine
        self.last_engine: str | None = None
        self.last_engine_reason: str | None = None
        self.opts = CellOptions(coupled=coupled, nonlinearity=nonlinearity)

        factory = {"device": device, "dtype": dtype}
        D = 2 if bidirectional else 1
        self._specs: list[ParamSpec] = []
        self._names: list[dict[str, str]] = []
        for layer in range(num_layers):
            for direction in range(D):
                spec = ParamSpec(
                    cell=self.cell,
                    opts=self.opts,
                    input_size=input_size if layer == 0 else (proj_size or hidden_size) * D,
                    hidden_size=hidden_size,
                    proj_size=proj_size,
                    bias=bias,
                    peephole=peephole,
                    layer_norm=layer_norm,
                )
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                self._specs.append(spec)
                self._names.append(register_params(self, spec, suffix, factory))
        self.reset_parameters()
        self._build_spec()

    _SPEC_FIELDS = frozenset(f.name for f in fields(RecurrentSpec)) - {"cell"}

    def _build_spec(self) -> None:
        """The static structure engines see, built once; rebuilt by __setattr__ when one of its
        attributes is reassigned (torch.nn users do set e.g. `layer.dropout`)."""
        values = {name: getattr(self, name) for name in self._SPEC_FIELDS}
        object.__setattr__(self, "spec", RecurrentSpec(cell=self.cell, **values))

    def __setattr__(self, name, value) -> None:
        if name == "zoneout" and "spec" in self.__dict__:  # reassigned: a rate or a pair, as
            value = _zoneout_pair(value, self.cell)  # the constructor takes it
        super().__setattr__(name, value)
        if name in self._SPEC_FIELDS and "spec" in self.__dict__:
            self._build_spec()

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        if "spec" not in self.__dict__:  # a layer pickled before RecurrentSpec existed
            self._build_spec()

    # ---- torch.nn compatibility ---------------------------------------------------------------
    def reset_parameters(self) -> None:
        for spec, names in zip(self._specs, self._names):
            init_params(self, spec, names, self.forget_bias)

    def flatten_parameters(self) -> None:
        """No-op, for torch.nn compatibility (lstmkit never keeps a flat weight buffer)."""

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        return [[getattr(self, n) for n in names.values()] for names in self._names]

    @property
    def _flat_weights_names(self) -> list[str]:
        return [n for names in self._names for n in names.values()]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        defaults = {
            "proj_size": 0,
            "num_layers": 1,
            "bias": True,
            "batch_first": False,
            "dropout": 0.0,
            "bidirectional": False,
            "forget_bias": None,
            "peephole": False,
            "coupled": False,
            "layer_norm": False,
            "recurrent_dropout": 0.0,
            "weight_drop": 0.0,
            "zoneout": (0.0, 0.0),
            "engine": "auto",
        }
        for key, default in defaults.items():
            if getattr(self, key) != default:
                s += f", {key}={getattr(self, key)!r}"
        return s

    # ---- forward -----------------------------------------------------------------------------
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def state_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """Shapes of the initial / final states: h (L*D, B, H_out) and, for LSTM, c (L*D, B, H)."""
        LD = self.num_layers * self.num_directions
        shapes = [(LD, batch, self.proj_size or self.hidden_size)]
        if "c" in self.cell.state_names:
            shapes.append((LD, batch, self.hidden_size))
        return shapes

    def _sample_masks(self, T: int, B: int, like: Tensor) -> list[StepMasks] | None:
        """One StepMasks per layer-direction when recurrent dropout or zoneout is training."""
        rd, (zc, zh) = self.recurrent_dropout, self.zoneout
        if not self.training or (rd == 0 and zc == 0 and zh == 0):
            return None
        H, H_out = self.hidden_size, self.proj_size or self.hidden_size
        return [
            StepMasks(
                recurrent=dropout_mask((B, H_out), rd, like) if rd > 0 else None,
                zoneout_h=bernoulli_mask((T, B, H_out), zh, like) if zh > 0 else None,
                zoneout_c=bernoulli_mask((T, B, H), zc, like) if zc > 0 else None,
            )
            for _ in self._names
        ]

    def _params(self):
        params = [gather(self, names) for names in self._names]
        if self.training and self.weight_drop > 0:
            for p in params:
                p.w_hh = drop_weight(p.w_hh, self.weight_drop)
        return params

    def forward(self, input, hx=None, lengths=None, return_trace: bool = False):
        """Run the stack. See the class docstring for shapes; returns like torch.nn, plus a
        Trace as a third element when return_trace=True."""
        prep = inputs.prepare(self, input, hx, lengths)
        x = prep.x
        T, B = (x.shape[1], x.shape[0]) if self.batch_first else (x.shape[0], x.shape[1])
        call = RecurrentCall(
            spec=self.spec,
            params=self._params(),
            x=x,
            hx=prep.hx,
            lengths=prep.lengths,
            training=self.training,
            masks=self._sample_masks(T, B, x),
            return_trace=return_trace,
        )
        engine, why = engines.select(self.engine, call)
        self.last_engine, self.last_engine_reason = engine.name, why
        result = engine.run(call)
        output, h_n = inputs.restore_output(self, prep, result.output, result.h_n)
        state = h_n if len(h_n) > 1 else h_n[0]
        if not return_trace:
            return output, state
        return output, state, inputs.restore_trace(self, prep, result.trace)
