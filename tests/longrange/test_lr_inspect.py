"""States, cell finding, pictures and the LSTMVis export."""

from __future__ import annotations

import h5py
import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from lstmkit.data.vocab import Vocab
from lstmkit.inspect import StateSet, collect_states, match_cells, predictive_cells, select_cells
from lstmkit.inspect.html import write_page
from lstmkit.inspect.lstmvis import export_lstmvis
from lstmkit.inspect.plots import plot_heatmaps, plot_saturation, plot_text_cell, saturation
from lstmkit.training.model import LanguageModel, ModelConfig

WORDS = ["<unk>", "<eos>", "the", "cat", "cats", "is", "are", "near", "dog", "."]
SENTS = [
    ["the", "cat", "is", "."],
    ["the", "cats", "near", "the", "dog", "are", "."],
    ["the", "zebra", "is"],
]


def tiny_lm(cell: str, seed: int = 0) -> tuple[LanguageModel, Vocab]:
    torch.manual_seed(seed)
    vocab = Vocab(WORDS)
    model = LanguageModel(
        ModelConfig(vocab_size=len(vocab), cell=cell, emb_size=5, hidden_size=6, num_layers=2)
    ).double()
    return model.eval(), vocab


def test_collect_states_matches_torch_cells_step_by_step():
    """c, h and every gate of the last layer, against torch.nn.LSTMCell with the same weights."""
    model, vocab = tiny_lm("lstm")
    st = collect_states(model, vocab, SENTS, layer=-1)
    assert st.names == ("i", "f", "g", "o", "c", "h") and st.mode == "LSTM"
    cell0, cell1 = torch.nn.LSTMCell(5, 6).double(), torch.nn.LSTMCell(6, 6).double()
    for k, layer_cell in enumerate((cell0, cell1)):
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer_cell, n).data.copy_(getattr(model.rnn, f"{n}_l{k}"))
    for k, sent in enumerate(SENTS):
        ids = torch.tensor([vocab.stoi["<eos>"]] + vocab.encode(sent))
        x = model.embedding(ids)  # (T+1, 5)
        s0 = s1 = (torch.zeros(1, 6, dtype=torch.float64),) * 2
        for t in range(len(ids)):
            s0 = cell0(x[t : t + 1], s0)
            pre = (
                cell1.weight_ih @ s0[0][0]
                + cell1.bias_ih
                + cell1.weight_hh @ s1[0][0]
                + cell1.bias_hh
            )
            s1 = cell1(s0[0], s1)
            if t == 0:
                continue  # the <eos> step is run but not kept
            i, f, g, o = pre.chunk(4)
            want = {
                "i": i.sigmoid(),
                "f": f.sigmoid(),
                "g": g.tanh(),
                "o": o.sigmoid(),
                "c": s1[1][0],
                "h": s1[0][0],
            }
            for name, v in want.items():
                np.testing.assert_allclose(
                    st.values[name][k][t - 1], v.detach().numpy(), rtol=1e-5, atol=1e-6
                )  # stored as float32


@pytest.mark.parametrize("cell,names", [("gru", ("r", "z", "n", "h")), ("rnn", ("h",))])
def test_collect_states_other_cells(cell, names):
    model, vocab = tiny_lm(cell)
    st = collect_states(model, vocab, SENTS)
    assert st.names == names and st.default_state() == "h"
    assert [v.shape for v in st.values["h"]] == [(4, 6), (7, 6), (3, 6)]
    X, index = st.flat("h")
    assert X.shape == (14, 6) and index[4] == (1, 0)


def planted() -> StateSet:
    """Cells 1 and 3 are on exactly over 'near the dog'; cell 0 is on everywhere."""
    toks = [
        ["a", "cat", "near", "the", "dog", "is"],
        ["x", "near", "the", "dog", "y"],
        ["near", "the", "hat", "q"],
    ]
    vals = []
    for s in toks:
        v = np.full((len(s), 5), -0.5, dtype=np.float32)
        v[:, 0] = 0.9
        for t, w in enumerate(s):
            if w in ("near", "the", "dog"):
                v[t, 1], v[t, 3] = 0.8, 0.6 if w != "the" or len(s) != 4 else 0.1
        vals.append(v)
    return StateSet(tokens=toks, values={"c": vals, "h": [np.tanh(v) for v in vals]})


def test_select_cells_on_across_and_off_around():
    st = planted()
    v = st.values["c"][0]
    assert select_cells(v, 2, 5, threshold=0.3) == [0, 1, 3]  # best (highest minimum) first
    assert select_cells(v, 2, 5, threshold=0.3, off_around=1) == [1, 3]
    assert select_cells(v, 2, 5, threshold=0.7) == [0, 1]
    with pytest.raises(ValueError, match="inside the sentence"):
        select_cells(v, 4, 9)


def test_match_cells_finds_the_other_place():
    st = planted()
    ms = match_cells(st, "c", [1, 3], threshold=0.3, length=3, exclude=(0, 2, 5))
    # 'near' alone in sentence 2 (the run is cut by cell 3 at 'the') is within the length slack
    assert [(m.sentence, m.start, m.end) for m in ms] == [(1, 1, 4), (2, 0, 1)]
    assert ms[0].share == 1.0 and ms[0].score == pytest.approx(1 - 1 / 3)
    ms = match_cells(st, "c", [1, 3], threshold=0.3, length=3, length_slack=0, exclude=(0, 2, 5))
    assert [(m.sentence, m.start, m.end) for m in ms] == [(1, 1, 4)]
    assert match_cells(st, "c", [], threshold=0.3) == []


def test_predictive_cells_finds_a_planted_number_cell():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    X = rng.normal(size=(600, 10))
    X[:, 7] += np.where(y == 1, -3.0, 3.0)  # cell 7: low for label 1
    X[:, 2] += np.where(y == 1, 0.8, -0.8)  # cell 2: weaker
    rk = predictive_cells(X, y, top=3, groups=np.arange(600) // 3)
    assert rk.cells[:2] == [7, 2] and rk.signs[0] == -1
    assert rk.test_accuracy[0] > 0.99 and rk.probe_test_accuracy > 0.99
    assert 0.4 < rk.majority_accuracy < 0.6 and rk.n_train + rk.n_test == 600
    with pytest.raises(ValueError, match="both values"):
        predictive_cells(X, np.zeros(600))


def _is_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50


def test_pictures_are_valid_pngs(tmp_path):
    model, vocab = tiny_lm("lstm")
    st = collect_states(model, vocab, SENTS)
    heat = plot_heatmaps(st, 1, tmp_path / "heat.png", cells=[0, 2])
    assert heat["tokens"] == SENTS[1] and np.array(heat["values"]["f"]).shape == (2, 7)
    text = plot_text_cell(st, "c", 3, tmp_path / "text.png")
    assert [t for t, _ in text["sentences"][2]] == SENTS[2]
    sat = plot_saturation(st, tmp_path / "sat.png")
    assert set(sat["gates"]) == {"i", "f", "o"} and len(sat["gates"]["f"]["left"]) == 6
    for name in ("heat.png", "text.png", "sat.png"):
        _is_png(tmp_path / name)
    rnn_states = collect_states(*tiny_lm("rnn"), SENTS)
    with pytest.raises(ValueError, match="no sigmoid gates"):
        plot_saturation(rnn_states, tmp_path / "no.png")


def test_saturation_fractions():
    f = [np.array([[0.05, 0.5], [0.95, 0.5], [0.02, 0.99]], dtype=np.float32)]
    st = StateSet(tokens=[["a", "b", "c"]], values={"f": f, "h": f})
    sat = saturation(st)
    assert sat["f"]["left"] == pytest.approx([2 / 3, 0]) and sat["f"]["right"] == pytest.approx(
        [1 / 3, 1 / 3]
    )


def test_lstmvis_export_is_readable(tmp_path):
    model, vocab = tiny_lm("lstm")
    st = collect_states(model, vocab, SENTS)
    d = export_lstmvis(st, tmp_path / "proj", name="tiny")
    N = sum(len(s) + 1 for s in SENTS)  # one </s> after each sentence
    with h5py.File(d / "states.hdf5") as f:
        assert f["states1"].shape == (N, 6) and f["output1"].shape == (N, 6)
        np.testing.assert_allclose(f["states1"][1], st.values["c"][0][1])
        np.testing.assert_allclose(f["output1"][N - 2], st.values["h"][2][-1])
        assert {"gate_i1", "gate_f1", "gate_g1", "gate_o1"} <= set(f)
    with h5py.File(d / "words.hdf5") as f:
        ids = f["word_ids"][:]
    words = dict(line.split() for line in (d / "words.dict").read_text().splitlines())
    id2w = {int(i): w for w, i in words.items()}
    assert [id2w[i] for i in ids[:5]] == ["the", "cat", "is", ".", "</s>"]
    yml = (d / "lstm.yml").read_text()
    for needle in (
        "states: states.hdf5",
        "word_ids: words.hdf5",
        "words: words.dict",
        "path: states1",
        "path: output1",
        "dict_file: words",
        "name: tiny",
    ):
        assert needle in yml


def test_html_page_is_self_contained(tmp_path):
    model, vocab = tiny_lm("lstm")
    st = collect_states(model, vocab, SENTS + [["</script>", "<b>"]])
    page = write_page(st, tmp_path / "p.html", title="t <x>", highlight=[2]).read_text()
    assert "<script src" not in page and "http" not in page.split("<script")[1]
    assert "<\\/script>" in page and "t &lt;x&gt;" in page
