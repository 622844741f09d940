"""Per-sample resets (forward(..., resets=)): a reset at step t starts sequence b afresh from its
initial state, exactly as if its segments ran as separate sequences: values and gradients, on
every engine that supports resets (reference, fused with its compiled and its Python loops),
float64 at 1e-8; the others refuse them, and auto falls back."""

from __future__ import annotations

import pytest
import torch

import lstmkit
from lstmkit.engines import ENGINES
from tests.parity import loss_of

TOL = 1e-8
T, B, I, H = 9, 3, 4, 5
# resets[t, b]: sequence 0 restarts at 3 and 7, sequence 1 at 1, sequence 2 never (a flag at
# t = 0 changes nothing, and one past a length is ignored)
RESET_AT = {0: (3, 7), 1: (0, 1), 2: ()}
LENGTHS = (9, 6, 8)

OPTIONS = {
    "lstm": (lstmkit.LSTM, {}),
    "lstm-peephole-proj": (lstmkit.LSTM, {"peephole": True, "proj_size": 3}),
    "lstm-coupled-ln": (lstmkit.LSTM, {"coupled": True, "layer_norm": True}),
    "lstm-zoneout": (lstmkit.LSTM, {"zoneout": (0.3, 0.2)}),
    "gru": (lstmkit.GRU, {}),
    "gru-ln-zoneout": (lstmkit.GRU, {"layer_norm": True, "zoneout": 0.2}),
    "rnn-relu": (lstmkit.RNN, {"nonlinearity": "relu"}),
}


def make(case: str, engine: str, bidirectional: bool):
    cls, opts = OPTIONS[case]
    torch.manual_seed(0)
    layer = cls(I, H, 2, bidirectional=bidirectional, dtype=torch.float64, engine=engine, **opts)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return layer.eval()


def resets_tensor(lengths=None) -> torch.Tensor:
    r = torch.zeros(T, B, dtype=torch.bool)
    for b, steps in RESET_AT.items():
        for t in steps:
            r[t, b] = True
    if lengths is not None:
        r[7, 1] = True  # past sequence 1's length (6): must be ignored
    return r


def inputs(layer):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, I, dtype=torch.float64, generator=gen)
    hx = tuple(torch.randn(s, dtype=torch.float64, generator=gen) for s in layer.state_shapes(B))
    return x, hx


def as_hx(hx):
    return hx if len(hx) > 1 else hx[0]


def as_tuple(h) -> tuple:
    return tuple(h) if isinstance(h, (tuple, list)) else (h,)


def grads_of(layer, loss, x, hx):
    return torch.autograd.grad(loss, [x, *hx, *layer.parameters()], allow_unused=True)


def batched(layer, x, hx, resets, lengths):
    x = x.clone().requires_grad_()
    hx = tuple(h.clone().requires_grad_() for h in hx)
    out, h_n = layer(x, as_hx(hx), lengths=lengths, resets=resets)
    loss = loss_of([out])
    return out, as_tuple(h_n), grads_of(layer, loss, x, hx)


def segments(layer, x, hx, lengths):
    """Each segment of each sequence run alone, from that sequence's initial state; the loss
    reads each output with the weight its position has in the batched loss."""
    x = x.clone().requires_grad_()
    hx = tuple(h.clone().requires_grad_() for h in hx)
    out = torch.zeros(T, B, layer.num_directions * (layer.proj_size or H), dtype=torch.float64)
    firsts, lasts = {}, {}
    for b in range(B):
        n = LENGTHS[b] if lengths is not None else T
        cuts = [0, *[t for t in RESET_AT[b] if 0 < t < n], n]
        for k, (s, e) in enumerate(zip(cuts, cuts[1:])):
            seg_out, seg_h = layer(x[s:e, b : b + 1], as_hx(tuple(h[:, b : b + 1] for h in hx)))
            out = out.index_put((torch.arange(s, e), torch.tensor(b)), seg_out[:, 0])
            if k == 0:
                firsts[b] = as_tuple(seg_h)
            lasts[b] = as_tuple(seg_h)
    loss = loss_of([out])
    D = layer.num_directions
    # final states: the forward direction ends in the last segment, the reverse in the first
    h_n = []
    for i in range(len(hx)):
        rows = []
        for b in range(B):
            per_dir = torch.stack([lasts[b][i], firsts[b][i]], dim=0) if D == 2 else None
            s = lasts[b][i] if D == 1 else per_dir.view(2, layer.num_layers, 2, 1, -1)
            if D == 2:  # layer-major then direction: forward from the last, reverse from the first
                s = torch.stack([s[0, :, 0], s[1, :, 1]], dim=1).reshape(-1, 1, s.shape[-1])
            rows.append(s)
        h_n.append(torch.cat(rows, dim=1))
    return out, tuple(h_n), grads_of(layer, loss, x, hx)


def close(got, want, what: str) -> None:
    for g, w in zip(got, want):
        if g is None and w is None:
            continue
        err = (g - w).abs().max().item()
        assert err <= TOL, f"{what}: max error {err:.3g} > {TOL}"


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("case", sorted(OPTIONS))
def test_the_reference_engine_runs_segments_apart(case, bidirectional, lengths) -> None:
    layer = make(case, "reference", bidirectional)
    x, hx = inputs(layer)
    L = None if lengths is None else torch.tensor(lengths)
    out, h_n, grads = batched(layer, x, hx, resets_tensor(lengths), L)
    want_out, want_h, want_grads = segments(layer, x, hx, lengths)
    close([out], [want_out], "output")
    close(h_n, want_h, "final state")
    close(grads, want_grads, "gradient")


@pytest.mark.parametrize("loops", ["compiled", "python"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("case", sorted(OPTIONS))
def test_the_fused_engine_equals_the_reference(
    case, bidirectional, lengths, loops, monkeypatch
) -> None:
    if loops == "python":
        monkeypatch.setenv("LSTMKIT_CPU_LOOPS", "0")
    ref, fused = make(case, "reference", bidirectional), make(case, "fused", bidirectional)
    x, hx = inputs(ref)
    L = None if lengths is None else torch.tensor(lengths)
    r = resets_tensor(lengths)
    want = batched(ref, x, hx, r, L)
    got = batched(fused, x, hx, r, L)
    assert fused.last_engine == "fused"
    close([got[0]], [want[0]], "output")
    close(got[1], want[1], "final state")
    close(got[2], want[2], "gradient")


def test_training_regularisers_draw_the_same_masks_with_and_without_resets() -> None:
    """In training the masks come from torch's RNG: a reset changes the states, not the draws."""
    layer = make("lstm", "fused", False).train()
    layer.recurrent_dropout = 0.3
    x, hx = inputs(layer)
    torch.manual_seed(5)
    out, _ = layer(x, as_hx(hx), resets=torch.zeros(T, B, dtype=torch.bool))
    torch.manual_seed(5)
    plain, _ = layer(x, as_hx(hx))
    close([out], [plain], "no reset flagged")


def test_engines_without_resets_refuse_them_and_auto_falls_back() -> None:
    x, _ = inputs(make("lstm", "reference", False))
    r = resets_tensor()
    for name, engine in ENGINES.items():
        if engine.supports_resets:
            continue
        layer = lstmkit.LSTM(I, H, dtype=torch.float64, engine=name)
        with pytest.raises(ValueError, match="per-sample resets are not in its kernels"):
            layer(x, resets=r)
    layer = lstmkit.LSTM(I, H, dtype=torch.float64)
    layer(x, resets=r)
    assert layer.last_engine == "fused"
    assert "'native' cannot: per-sample resets" in layer.last_engine_reason


def test_resets_follow_the_input_layout() -> None:
    layer = make("gru", "reference", False)
    x, hx = inputs(layer)
    r = resets_tensor()
    with torch.no_grad():
        want, _ = layer(x, as_hx(hx), resets=r)
        layer.batch_first = True
        got, _ = layer(x.transpose(0, 1), as_hx(hx), resets=r.t())
        close([got.transpose(0, 1)], [want], "batch_first")
        layer.batch_first = False
        one, _ = layer(x[:, 0], as_hx(hx)[:, 0], resets=r[:, 0])  # unbatched
        close([one], [want[:, 0]], "unbatched")


def test_bad_resets_are_refused_with_the_expected_shape() -> None:
    layer = make("lstm", "reference", False)
    x, _ = inputs(layer)
    with pytest.raises(TypeError, match="resets must be a bool tensor"):
        layer(x, resets=torch.zeros(T, B))
    with pytest.raises(ValueError, match=r"shape \(9, 3\), \(T, B\).*got \(3, 9\)"):
        layer(x, resets=torch.zeros(B, T, dtype=torch.bool))
    with pytest.raises(TypeError, match="resets must be a bool tensor"):
        layer(x, resets=[[False] * B] * T)


def test_resets_under_torch_compile_and_export() -> None:
    layer = lstmkit.LSTM(I, H, 2)
    x = torch.randn(T, B, I)
    r = resets_tensor()
    want, _ = layer(x, resets=r)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    got, _ = compiled(x, resets=r)
    assert layer.last_engine == "fused"
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    exported = torch.export.export(layer, (x,), {"resets": r})
    torch.testing.assert_close(exported.module()(x, resets=r)[0], want, atol=0, rtol=0)
