import pytest
import torch

import lstmkit
from benchmarks.lm_speed import TorchLSTMLM
from lstmkit.training.model import LanguageModel, ModelConfig, count_parameters, detach_hidden

V = 17


def _tokens(T=6, B=3, seed=0):
    return torch.randint(0, V, (T, B), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("engine", ["auto", "reference"])
def test_shapes_and_hidden(cell, tie, engine):
    torch.manual_seed(0)
    m = LanguageModel(
        ModelConfig(
            vocab_size=V, cell=cell, emb_size=8, hidden_size=8, tie_weights=tie, engine=engine
        )
    )
    assert isinstance(m.rnn, {"lstm": lstmkit.LSTM, "gru": lstmkit.GRU, "rnn": lstmkit.RNN}[cell])
    logits, hidden = m(_tokens())
    assert logits.shape == (6, 3, V)
    h0 = m.init_hidden(3)
    if cell == "lstm":
        assert isinstance(hidden, tuple) and hidden[0].shape == h0[0].shape == (2, 3, 8)
    else:
        assert hidden.shape == h0.shape == (2, 3, 8)
    assert (m.decoder.weight is m.embedding.weight) == tie
    assert count_parameters(m) == sum(p.numel() for p in set(m.parameters()))


def test_equals_torch_nn_lstm_twin_in_double():
    torch.manual_seed(0)
    m = LanguageModel(ModelConfig(vocab_size=V, emb_size=8, hidden_size=10)).double()
    twin = TorchLSTMLM(m).double()
    x = _tokens(9, 4)
    ours, (h, c) = m(x)
    theirs, (h2, c2) = twin(x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    torch.testing.assert_close(c, c2, rtol=0, atol=1e-12)


@pytest.mark.parametrize("engine", ["native", "reference"])
def test_carried_state_equals_one_long_pass(engine):
    """Truncated BPTT's premise: two windows with the carried state = one window of both."""
    torch.manual_seed(0)
    m = (
        LanguageModel(ModelConfig(vocab_size=V, emb_size=8, hidden_size=8, engine=engine))
        .double()
        .eval()
    )
    x = _tokens(10, 2)
    full, _ = m(x)
    a, h = m(x[:4])
    b, _ = m(x[4:], detach_hidden(h))
    torch.testing.assert_close(torch.cat([a, b]), full, rtol=0, atol=1e-12)


def test_trace_is_returned():
    m = LanguageModel(ModelConfig(vocab_size=V, emb_size=8, hidden_size=8))
    logits, hidden, trace = m(_tokens(), return_trace=True)
    assert isinstance(trace, lstmkit.Trace)
    assert trace.gates["f"].shape == (2, 1, 6, 3, 8)
    torch.testing.assert_close(trace.hidden[-1, 0, -1], hidden[0][-1])


def test_uniform_init_and_forget_bias():
    torch.manual_seed(0)
    m = LanguageModel(
        ModelConfig(
            vocab_size=V,
            emb_size=8,
            hidden_size=8,
            init="uniform",
            init_range=0.05,
            forget_bias=1.0,
        )
    )
    for name, p in m.named_parameters():
        if name.startswith("rnn.bias_ih"):
            assert torch.all(p[8:16] == 1.0) and p[:8].abs().max() <= 0.05
        elif name.startswith("rnn.bias_hh"):
            assert torch.all(p[8:16] == 0.0)
        else:
            assert p.abs().max() <= 0.05, name


def test_regularisers_act_in_training_only():
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=V,
        emb_size=8,
        hidden_size=8,
        dropout=0.3,
        embed_dropout=0.2,
        variational=True,
        weight_drop=0.3,
        recurrent_dropout=0.2,
    )
    m = LanguageModel(cfg)
    x = _tokens()
    m.eval()
    torch.testing.assert_close(m(x)[0], m(x)[0])
    m.train()
    assert not torch.allclose(m(x)[0], m(x)[0])


@pytest.mark.parametrize("variational", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_eval_logits_ignore_dropout(cell, variational):
    """In evaluation dropout does nothing (inverted dropout needs no rescaling): the logits of a
    model with dropout 0.3 equal those of the same weights with dropout 0, and a computation by
    hand (embedding rows -> torch.nn with the same weights -> x W^T + b)."""
    kw = dict(vocab_size=V, cell=cell, emb_size=8, hidden_size=8, num_layers=2)
    torch.manual_seed(0)
    m = LanguageModel(
        ModelConfig(**kw, dropout=0.3, embed_dropout=0.2, variational=variational)
    ).double()
    plain = LanguageModel(ModelConfig(**kw)).double()
    plain.load_state_dict(m.state_dict())
    m.eval(), plain.eval()
    x = _tokens(7, 3)
    logits, hidden = m(x)
    torch.testing.assert_close(logits, plain(x)[0], rtol=0, atol=0)
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](8, 8, num_layers=2).double()
    rnn.load_state_dict(m.rnn.state_dict())
    with torch.no_grad():
        out, _ = rnn(m.embedding.weight[x])
        want = out @ m.decoder.weight.T + m.decoder.bias
    torch.testing.assert_close(logits, want, rtol=0, atol=1e-12)
    m.train()  # and in training the same model does drop (the comparison can tell)
    assert not torch.allclose(m(x)[0], want)


def test_variational_dropout_mask_shared_over_time():
    from lstmkit.training.model import _dropout

    torch.manual_seed(0)
    y = _dropout(torch.ones(7, 3, 50), 0.5, True, variational=True)
    assert torch.equal(y, y[:1].expand_as(y)) and (y == 0).any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cell": "lstm2"}, "cell must be one of"),
        ({"tie_weights": True, "emb_size": 4, "hidden_size": 8}, "must equal hidden_size"),
        ({"dropout": 1.0}, "probability"),
        ({"cell": "gru", "peephole": True}, "only for cell='lstm'"),
        ({"hidden_size": 0}, "positive integer"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(vocab_size=V, **kwargs)


def test_tokens_must_be_time_major_long():
    m = LanguageModel(ModelConfig(vocab_size=V, emb_size=8, hidden_size=8))
    with pytest.raises(ValueError, match=r"\(T, B\) int64"):
        m(torch.zeros(5, dtype=torch.long))


def test_speed_comparison_runs_both_models_without_touching_the_original():
    from benchmarks.lm_speed import compare_training_speed
    from lstmkit.data.batching import batchify

    m = LanguageModel(ModelConfig(vocab_size=V, emb_size=8, hidden_size=8))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    data = batchify(torch.randint(0, V, (200,)), 4)
    r = compare_training_speed(m, data, bptt=5, steps=2, rounds=1, extra_engines=("reference",))
    assert set(r["tokens_per_s"]) == {
        "lstmkit (engine=auto)",
        "torch.nn.LSTM",
        "lstmkit (engine=reference)",
    }
    assert all(v > 0 for v in r["tokens_per_s"].values()) and r["lstmkit_engine_ran"] == "native"
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
