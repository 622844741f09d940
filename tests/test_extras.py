"""The variants torch lacks: gradcheck, reduction to the plain cell, and their papers' semantics.

Each variant is checked against an independent hand-written loop over the equations (written
here, not imported from lstmkit), so a wrong equation in lstmkit cannot pass by agreeing with
itself.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import F64, assert_close, compare_run, make_inputs, twins

import lstmkit
from lstmkit.cells.regularizers import dropout_mask

T, B, I, H = 4, 3, 3, 4
LENGTHS = torch.tensor([4, 2, 3])


def ln(x, w, b=None):
    return F.layer_norm(x, (x.shape[-1],), w, b, 1e-5)


def manual_lstm(m, x, h, c, *, rec_mask=None, zone=None, zone_masks=None, w_hh=None):
    """Hand-written one-layer LSTM loop over the papers' equations. x (T, B, I)."""
    w_ih, b_ih, b_hh = m.weight_ih_l0, m.bias_ih_l0, m.bias_hh_l0
    w_hh = m.weight_hh_l0 if w_hh is None else w_hh
    peep = getattr(m, "weight_peep_l0", None)
    outs = []
    for t in range(x.shape[0]):
        h_in = h if rec_mask is None else h * rec_mask
        xp, hp = x[t] @ w_ih.T, h_in @ w_hh.T
        if m.layer_norm:
            xp, hp = ln(xp, m.ln_weight_ih_l0), ln(hp, m.ln_weight_hh_l0)
        pre = xp + b_ih + hp + b_hh
        if m.coupled:
            f_, g_, o_ = pre.chunk(3, -1)
        else:
            i_, f_, g_, o_ = pre.chunk(4, -1)
        if peep is not None:
            pf = peep.chunk(2 if m.coupled else 3)
            wi, wf, wo = (None, *pf) if m.coupled else pf
            f = torch.sigmoid(f_ + wf * c)
            i = 1 - f if m.coupled else torch.sigmoid(i_ + wi * c)
        else:
            f = torch.sigmoid(f_)
            i = 1 - f if m.coupled else torch.sigmoid(i_)
        c_new = f * c + i * torch.tanh(g_)
        o = torch.sigmoid(o_ + wo * c_new) if peep is not None else torch.sigmoid(o_)
        c_hat = ln(c_new, m.ln_weight_c_l0, m.ln_bias_c_l0) if m.layer_norm else c_new
        h_new = o * torch.tanh(c_hat)
        if zone is not None:  # (rate_c, rate_h), eval: expectation; with masks: choose
            if zone_masks is None:
                c_new = zone[0] * c + (1 - zone[0]) * c_new
                h_new = zone[1] * h + (1 - zone[1]) * h_new
            else:
                c_new = torch.where(zone_masks[1][t] > 0, c, c_new)
                h_new = torch.where(zone_masks[0][t] > 0, h, h_new)
        h, c = h_new, c_new
        outs.append(h)
    return torch.stack(outs), h, c


def _randomise(m):
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-0.8, 0.8)  # layer-norm gains away from 1 so their use is checked


@pytest.mark.parametrize("engine", ["reference", "auto"])
@pytest.mark.parametrize(
    "opts",
    [
        {"peephole": True},
        {"coupled": True},
        {"layer_norm": True},
        {"peephole": True, "coupled": True, "layer_norm": True},
    ],
)
def test_structural_variants_match_hand_written_equations(opts, engine):
    m = lstmkit.LSTM(I, H, engine=engine, **opts).to(F64)
    _randomise(m)
    x, h0, c0 = (
        torch.randn(T, B, I, dtype=F64),
        torch.randn(1, B, H, dtype=F64),
        torch.randn(1, B, H, dtype=F64),
    )
    out, (h, c) = m(x, (h0, c0))
    ref_out, ref_h, ref_c = manual_lstm(m, x, h0[0], c0[0])
    assert_close(out, ref_out, "output")
    assert_close(h[0], ref_h, "h_n")
    assert_close(c[0], ref_c, "c_n")
    assert m.last_engine != "native"


@pytest.mark.parametrize(
    "kind,opts",
    [
        ("LSTM", {"peephole": True}),
        ("LSTM", {"coupled": True}),
        ("LSTM", {"layer_norm": True}),
        ("LSTM", {"recurrent_dropout": 0.3}),
        ("LSTM", {"weight_drop": 0.3}),
        ("LSTM", {"zoneout": (0.2, 0.4)}),
        ("LSTM", {"zoneout": 0.3, "proj_size": 2}),
        ("GRU", {"layer_norm": True}),
        ("GRU", {"zoneout": 0.3}),
        ("GRU", {"recurrent_dropout": 0.3}),
        ("RNN", {"layer_norm": True}),
        ("RNN", {"weight_drop": 0.3}),
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck(kind, opts, training):
    m = getattr(lstmkit, kind)(2, 3, num_layers=2, bidirectional=True, **opts).to(F64)
    m.train(training)
    x = torch.randn(3, 2, 2, dtype=F64, requires_grad=True)
    params = list(m.parameters())

    def fn(x, *ps):
        torch.manual_seed(0)  # the same masks at every evaluation
        out = torch.func.functional_call(
            m,
            dict(zip([n for n, _ in m.named_parameters()], ps)),
            (x,),
            {"lengths": torch.tensor([3, 2])},
        )
        return out[0]

    inputs = (x, *[p.detach().requires_grad_(True) for p in params])
    # fast_mode checks random projections of the Jacobian: same bugs caught, far fewer forwards
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


def test_peephole_zero_reduces_to_torch_lstm():
    ref, _ = twins("LSTM", I, H, num_layers=2, bidirectional=True)
    ours = lstmkit.LSTM(I, H, num_layers=2, bidirectional=True, peephole=True).to(F64)
    missing = ours.load_state_dict(ref.state_dict(), strict=False).missing_keys
    assert sorted(missing) == sorted(n for n, _ in ours.named_parameters() if "peep" in n)
    with torch.no_grad():
        for n, p in ours.named_parameters():
            if "peep" in n:
                p.zero_()

    compare = make_inputs("padded", T, B, I, False, LENGTHS)
    x, _ = compare()
    out_ours, _ = ours(x)
    out_ref, _ = ref(x)
    assert_close(out_ours, out_ref, "output with zero peepholes")


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("opt", ["recurrent_dropout", "weight_drop", "zoneout"])
def test_regularisers_off_or_eval_are_the_plain_cell(kind, opt):
    """Rate 0 in training, and recurrent_dropout / weight_drop in eval, are exactly torch.nn."""
    for rate, training in ((0.0, True), (0.5, False)):
        if opt == "zoneout" and rate > 0:
            continue  # zoneout in eval is the expectation, not the plain cell (tested below)
        ref, _ = twins(kind, I, H, num_layers=2)
        ours = getattr(lstmkit, kind)(I, H, num_layers=2, **{opt: rate}).to(F64)
        ours.load_state_dict(ref.state_dict())
        ref.train(training), ours.train(training)
        compare_run(ref, ours, make_inputs("packed", T, B, I, False, LENGTHS))


def test_recurrent_dropout_is_one_mask_per_sequence():
    m = lstmkit.LSTM(I, H, recurrent_dropout=0.5).to(F64)
    x = torch.randn(T, B, I, dtype=F64)
    torch.manual_seed(3)
    out, (h, c) = m(x)
    torch.manual_seed(3)
    mask = dropout_mask((B, H), 0.5, x)  # what the layer samples: (B, H), reused at every step
    ref_out, ref_h, ref_c = manual_lstm(
        m, x, torch.zeros(B, H, dtype=F64), torch.zeros(B, H, dtype=F64), rec_mask=mask
    )
    assert_close(out, ref_out, "output")
    assert set(mask.unique().tolist()) <= {0.0, 2.0}


def test_recurrent_dropout_one_cuts_the_recurrence():
    m = lstmkit.LSTM(I, H, recurrent_dropout=1.0).to(F64)
    plain = lstmkit.LSTM(I, H).to(F64)
    plain.load_state_dict(m.state_dict())
    with torch.no_grad():
        plain.weight_hh_l0.zero_()
    x = torch.randn(T, B, I, dtype=F64)
    assert_close(m(x)[0], plain(x)[0], "no recurrent input")


@pytest.mark.parametrize("engine", ["reference", "native", "auto"])
def test_weight_drop_is_dropconnect_on_w_hh(engine):
    m = lstmkit.LSTM(I, H, num_layers=2, weight_drop=0.5, engine=engine).to(F64)
    ref = torch.nn.LSTM(I, H, num_layers=2).to(F64)
    x = torch.randn(T, B, I, dtype=F64)
    torch.manual_seed(5)
    out, _ = m(x)
    torch.manual_seed(5)
    state = m.state_dict()
    for layer in range(2):  # the layer samples one mask per layer, in order
        w = state[f"weight_hh_l{layer}"]
        state[f"weight_hh_l{layer}"] = w * dropout_mask(tuple(w.shape), 0.5, w)
    ref.load_state_dict(state)
    assert_close(out, ref(x)[0], "output with the same dropped W_hh")
    assert (m.last_engine == "native") == (engine in ("native", "auto"))


@pytest.mark.parametrize("engine", ["reference", "fused", "auto"])
def test_zoneout_semantics(engine):
    # training with zoneout 1: every unit keeps its value
    m = lstmkit.LSTM(I, H, zoneout=1.0, engine=engine).to(F64)
    x = torch.randn(T, B, I, dtype=F64)
    h0, c0 = torch.randn(1, B, H, dtype=F64), torch.randn(1, B, H, dtype=F64)
    out, (h, c) = m(x, (h0, c0))
    assert_close(h, h0, "h_n == h_0 with zoneout 1")
    assert_close(c, c0, "c_n == c_0 with zoneout 1")
    assert_close(out, h0.expand(T, B, H), "outputs hold h_0")
    m = lstmkit.LSTM(I, H, zoneout=(0.3, 0.6), engine=engine).to(F64).eval()  # the expectation
    out, (h, c) = m(x, (h0, c0))
    ref_out, _, ref_c = manual_lstm(m, x, h0[0], c0[0], zone=(0.3, 0.6))
    assert_close(out, ref_out, "zoneout eval output")
    assert_close(c[0], ref_c, "zoneout eval c_n")
    m.train()
    torch.manual_seed(11)
    out, _ = m(x, (h0, c0))
    torch.manual_seed(11)
    mh = torch.empty(T, B, H, dtype=F64).bernoulli_(0.6)
    mc = torch.empty(T, B, H, dtype=F64).bernoulli_(0.3)
    ref_out, _, _ = manual_lstm(m, x, h0[0], c0[0], zone=(0.3, 0.6), zone_masks=(mh, mc))
    assert_close(out, ref_out, "zoneout training output")
    assert engine == "auto" or m.last_engine == engine


def test_forget_bias_and_layouts():
    m = lstmkit.LSTM(I, H, forget_bias=1.0)
    assert torch.all(m.bias_ih_l0[H : 2 * H] == 1.0) and torch.all(m.bias_hh_l0[H : 2 * H] == 0.0)
    cifg = lstmkit.LSTM(I, H, coupled=True, peephole=True)
    assert cifg.weight_ih_l0.shape == (3 * H, I)  # f, g, o rows only
    assert cifg.weight_peep_l0.shape == (2 * H,)  # f, o
    lnm = lstmkit.LSTM(I, H, layer_norm=True)
    assert lnm.ln_weight_c_l0.shape == (H,) and torch.all(lnm.ln_weight_ih_l0 == 1)
    with pytest.raises(TypeError):
        lstmkit.GRU(I, H, peephole=True)


@pytest.mark.parametrize("cls", [lstmkit.LSTM, lstmkit.LSTMCell])
@pytest.mark.parametrize(
    "coupled,f_rows", [(False, slice(H, 2 * H)), (True, slice(0, H))], ids=["ifgo", "fgo"]
)
def test_forget_bias_lands_on_the_forget_block(cls, coupled, f_rows):
    """The forget block is rows H:2H of (i, f, g, o) and rows 0:H of the coupled (f, g, o):
    forget_bias goes to its b_ih, its b_hh is zeroed, and every other entry is left as the plain
    init draws it (same seed, forget_bias=None)."""
    kw = {"num_layers": 2, "bidirectional": True} if cls is lstmkit.LSTM else {}
    torch.manual_seed(7)
    m = cls(I, H, forget_bias=1.0, coupled=coupled, **kw)
    torch.manual_seed(7)
    plain = cls(I, H, coupled=coupled, **kw)
    blocks = 3 if coupled else 4
    others = torch.ones(blocks * H, dtype=torch.bool)
    others[f_rows] = False
    biases = [n for n, _ in m.named_parameters() if n.startswith("bias_")]
    assert len(biases) == (8 if cls is lstmkit.LSTM else 2)
    for name, p in m.named_parameters():
        q = plain.get_parameter(name)
        if name.startswith("bias_ih"):
            assert torch.all(p[f_rows] == 1.0), name
            assert torch.equal(p[others], q[others]), name
        elif name.startswith("bias_hh"):
            assert torch.all(p[f_rows] == 0.0), name
            assert torch.equal(p[others], q[others]), name
        else:
            assert torch.equal(p, q), name
    g_rows = slice(H, 2 * H) if coupled else slice(2 * H, 3 * H)
    bound = 1 / H**0.5  # the g block keeps torch's U(-1/sqrt(H), 1/sqrt(H)) draw
    g_ih, g_hh = m.get_parameter(biases[0])[g_rows], m.get_parameter(biases[1])[g_rows]
    assert torch.all(g_ih.abs() <= bound) and torch.all(g_ih != 1.0)
    assert torch.count_nonzero(g_hh) == H


@pytest.mark.parametrize("p", [0.25, 0.8])
def test_dropout_mask_is_inverted_dropout(p):
    """0 with probability p, else exactly 1 / (1 - p) (p = 0.5 cannot tell 1/(1-p) from 1/p)."""
    like = torch.empty(0, dtype=F64)
    mask = dropout_mask((400, 500), p, like)
    assert mask.shape == (400, 500) and mask.dtype == F64
    kept = mask[mask != 0]
    assert torch.all(kept == 1 / (1 - p))
    zero_share = 1 - kept.numel() / mask.numel()
    assert abs(zero_share - p) < 0.01  # 200000 draws: the standard error is below 0.001
    assert abs(mask.mean().item() - 1) < 0.02  # inverted dropout keeps the expectation


@pytest.mark.parametrize("engine", ["reference", "fused", "auto"])
@pytest.mark.parametrize("p", [0.25, 0.8])
def test_recurrent_dropout_uses_the_inverted_mask(p, engine):
    """The layer's recurrent dropout is h_{t-1} * mask with a (B, H) mask of 0 and 1 / (1 - p),
    sampled once per call: the mask built here by hand from the same random draws."""
    m = lstmkit.LSTM(I, H, recurrent_dropout=p, engine=engine).to(F64)
    _randomise(m)
    x = torch.randn(T, B, I, dtype=F64)
    h0, c0 = torch.randn(1, B, H, dtype=F64), torch.randn(1, B, H, dtype=F64)
    torch.manual_seed(21)
    out, (h, c) = m(x, (h0, c0))
    torch.manual_seed(21)
    keep = torch.empty(B, H, dtype=F64).bernoulli_(1 - p)
    mask = keep / (1 - p)
    assert 0 < keep.sum() < B * H  # some units dropped, some kept
    ref_out, ref_h, ref_c = manual_lstm(m, x, h0[0], c0[0], rec_mask=mask)
    assert_close(out, ref_out, "output")
    assert_close(h[0], ref_h, "h_n")
    assert_close(c[0], ref_c, "c_n")
