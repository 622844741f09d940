"""RecurrentBase: the constructor, parameters and forward contract shared by LSTM, GRU and RNN.

The forward pass is three steps: `inputs.prepare` checks and canonicalises what the caller gave,
`engines.select` picks who computes, and `inputs.restore_*` gives the result back in the caller's
form. Which engine ran, and why, is kept in `last_engine` / `last_engine_reason`.
"""

from __future__ import annotations

import warnings
from dataclasses import fields

from torch import Tensor, nn

from lstmkit import engines
from lstmkit.cells.base import Cell, CellOptions
from lstmkit.cells.regularizers import StepMasks, bernoulli_mask, drop_weight, dropout_mask
from lstmkit.engines.base import RecurrentCall, RecurrentSpec
from lstmkit.intervene import bind
from lstmkit.nn import checks, inputs
from lstmkit.nn.params import ParamSpec, gather, init_params, register_params


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
        dropout = checks.check_dropout(dropout)  # first, as torch.nn checks it
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                f"num_layers={num_layers}",
                stacklevel=3,
            )
        for flag_name, flag in (("batch_first", batch_first), ("bidirectional", bidirectional)):
            checks.check_bool(flag_name, flag)
        self.input_size = checks.check_size("input_size", input_size)
        self.hidden_size = checks.check_size("hidden_size", hidden_size)
        checks.check_size("num_layers", num_layers)
        checks.check_size("proj_size", proj_size, minimum=0)
        if proj_size >= hidden_size:
            raise ValueError(
                f"proj_size has to be smaller than hidden_size, got proj_size={proj_size} and "
                f"hidden_size={hidden_size}; lower proj_size or pass 0 to disable projections"
            )
        if proj_size and not self.cell.supports_projection:
            raise ValueError(f"proj_size argument is only supported for LSTM, not {self.cell.name}")
        forget_bias = checks.check_cell_options(
            self.cell,
            bias=bias,
            nonlinearity=nonlinearity,
            forget_bias=forget_bias,
            peephole=peephole,
            coupled=coupled,
            layer_norm=layer_norm,
        )
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = dropout
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.nonlinearity = nonlinearity
        self.peephole = peephole
        self.coupled = coupled
        self.layer_norm = layer_norm
        self.forget_bias = forget_bias  # after bias and coupled, which its check reads
        # __setattr__ checks and converts these as they are set (see _ATTR_CHECKS)
        self.recurrent_dropout = recurrent_dropout
        self.weight_drop = weight_drop
        self.zoneout = zoneout
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

    # The float and name attributes torch.nn users do reassign (`layer.dropout = 0.3`), checked
    # on every assignment as the constructor checks them: a bad value is refused where it is
    # set, not at the next forward (an unknown engine was a KeyError there, a NaN forget_bias
    # a NaN output after reset_parameters).
    _ATTR_CHECKS = {
        "dropout": lambda self, v: checks.check_dropout(v),
        "recurrent_dropout": lambda self, v: checks.check_rate("recurrent_dropout", v),
        "weight_drop": lambda self, v: checks.check_rate("weight_drop", v, upper_inclusive=False),
        "zoneout": lambda self, v: checks.zoneout_pair(v, self.cell),  # a rate or a pair
        "forget_bias": lambda self, v: checks.check_forget_bias(
            v, self.cell, self.coupled, self.bias
        ),
        "engine": lambda self, v: checks.check_engine(v),
    }

    def __setattr__(self, name, value) -> None:
        check = self._ATTR_CHECKS.get(name)
        if check is not None:
            value = check(self, value)
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
            value = getattr(self, key)
            if value != default:
                value = tuple(value) if key == "zoneout" else value  # (cell, hidden), as given
                s += f", {key}={value!r}"
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
        rd, zc, zh = self.recurrent_dropout, self.zoneout.cell, self.zoneout.hidden
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

    def stream(self, hx=None, batch_size: int | None = None):
        """A lstmkit.nn.stream.Stream: this layer run one time step per call, its state kept
        between calls (token-by-token inference). hx as forward's (batched); without it the
        state starts at zero for `batch_size` sequences (default 1)."""
        from lstmkit.nn.stream import Stream  # late: the stream imports the engines

        return Stream(self, hx, batch_size)

    def forward(
        self,
        input,
        hx=None,
        lengths=None,
        return_trace: bool = False,
        intervention=None,
        resets=None,
    ):
        """Run the stack. See the class docstring for shapes; returns like torch.nn, plus a
        Trace as a third element when return_trace=True. `intervention` (lstmkit.Intervention)
        ablates or patches states during the run (lstmkit.intervene). `resets` (T, B) bool
        ((B, T) with batch_first, (T,) unbatched): True where sequence b starts afresh at step t,
        from its initial state (hx's row b, zeros without hx), as if the segments ran apart."""
        prep = inputs.prepare(self, input, hx, lengths, resets)
        x = prep.x
        T, B = (x.shape[1], x.shape[0]) if self.batch_first else (x.shape[0], x.shape[1])
        bound = None if intervention is None else bind(intervention, self.spec, T, B)
        call = RecurrentCall(
            spec=self.spec,
            params=self._params(),
            x=x,
            hx=prep.hx,
            lengths=prep.lengths,
            training=self.training,
            masks=self._sample_masks(T, B, x),
            return_trace=return_trace,
            intervention=bound or None,  # one that edits nothing is none: any engine runs it
            resets=prep.resets,
        )
        engine, why = engines.select(self.engine, call)
        self.last_engine, self.last_engine_reason = engine.name, why
        result = engine.run(call)
        output, h_n = inputs.restore_output(self, prep, result.output, result.h_n)
        state = h_n if len(h_n) > 1 else h_n[0]
        if not return_trace:
            return output, state
        return output, state, inputs.restore_trace(self, prep, result.trace)
