"""The commands end to end on tiny settings: tasks, agreement, inspect and the demo."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from lstmkit.cli.main import main


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cmd", ["tasks", "agreement", "inspect", "demo"])
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "usage: lstmkit " + cmd in capsys.readouterr().out


def test_tasks_show_train_and_sweep(tmp_path, capsys):
    assert main(["tasks", "show", "--task", "temporal", "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "t1 in [10, 20], t2 in [50, 60]" in out and "-> class" in out
    res = tmp_path / "r.json"
    assert (
        main(
            [
                "tasks",
                "train",
                "--task",
                "copy",
                "--lag",
                "5",
                "--cell",
                "gru",
                "--hidden-size",
                "8",
                "--max-sequences",
                "64",
                "--test-size",
                "16",
                "--no-progress",
                "--out",
                str(res),
            ]
        )
        == 0
    )
    r = json.loads(res.read_text())
    assert r["sequences"] == 64 and not r["solved"] and r["test_size"] == 16
    assert (
        main(
            [
                "tasks",
                "sweep",
                "--task",
                "adding",
                "--cells",
                "rnn,lstm",
                "--lags",
                "22,30",
                "--hidden-size",
                "4",
                "--max-sequences",
                "32",
                "--test-size",
                "8",
                "--no-progress",
                "--out",
                str(tmp_path / "sweep"),
            ]
        )
        == 0
    )
    runs = json.loads((tmp_path / "sweep" / "results.json").read_text())["runs"]
    assert [(r["config"]["cell"], r["config"]["lag"]) for r in runs] == [
        ("rnn", 22),
        ("lstm", 22),
        ("rnn", 30),
        ("lstm", 30),
    ]
    assert (tmp_path / "sweep" / "accuracy_by_lag.png").stat().st_size > 1000


def test_agreement_and_inspect_commands(tmp_path, capsys):
    d = tmp_path / "agr"
    assert (
        main(
            [
                "agreement",
                "generate",
                "--out",
                str(d),
                "--train",
                "300",
                "--test-per-distance",
                "4",
                "--max-test-distance",
                "6",
            ]
        )
        == 0
    )
    assert len((d / "train.txt").read_text().splitlines()) == 300
    assert (
        main(
            [
                "agreement",
                "train",
                "--data",
                str(d / "train.txt"),
                "--out",
                str(d / "lstm"),
                "--steps",
                "5",
                "--hidden-size",
                "8",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "agreement",
                "eval",
                str(d / "lstm"),
                "--data",
                str(d / "test.jsonl"),
                "--json",
                str(d / "eval.json"),
            ]
        )
        == 0
    )
    assert "by distance" in capsys.readouterr().out
    rep = json.loads((d / "eval.json").read_text())
    assert rep["n"] == 28 and set(rep["by_distance"]) == {str(k) for k in range(7)}
    linzen = tmp_path / "numpred.test.1"
    linzen.write_text("VBZ\tthe cat near the dogs\nVBP\tthe zebras near the cat\n")
    assert (
        main(
            [
                "agreement",
                "eval",
                "--checkpoint",
                str(d / "lstm"),
                "--format",
                "linzen",
                "--data",
                str(linzen),
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert "on 2 scorable items; 0 unscorable" in out and "OOV share of words 10.0%" in out
    assert "note: --checkpoint is deprecated" in err  # the older spelling still works
    assert "more frequent subject number would score 0.500" in out

    text = tmp_path / "text.txt"
    text.write_text("the cats near the dog are happy .\nthe dog is old .\n")
    ck = [str(d / "lstm"), "--text", str(text)]
    assert main(["inspect", "plots", *ck, "--out", str(tmp_path / "plots"), "--cell", "1"]) == 0
    figs = json.loads((tmp_path / "plots" / "figures.json").read_text())
    assert set(figs) == {"heatmaps_0", "heatmaps_1", "text_cell", "saturation"}
    assert main(["inspect", "html", *ck, "--out", str(tmp_path / "p.html")]) == 0
    assert "cats" in (tmp_path / "p.html").read_text()
    capsys.readouterr()
    assert (
        main(["inspect", "select", *ck, "--sentence", "0", "--span", "1:3", "--threshold", "-5"])
        == 0
    )
    captured = capsys.readouterr()
    assert "span 1:3 = 'cats near'; c >= -5.0: 8 cells" in captured.out
    assert captured.err == ""  # no deprecation note for the positional checkpoint
    assert (
        main(
            [
                "inspect",
                "predict",
                "--checkpoint",
                str(d / "lstm"),
                "--generated",
                str(d / "test.jsonl"),
                "--top",
                "2",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "logistic regression" in captured.out
    assert "note: --checkpoint is deprecated" in captured.err  # inspect's older spelling
    assert main(["inspect", "lstmvis", *ck, "--out", str(tmp_path / "vis")]) == 0
    with h5py.File(tmp_path / "vis" / "states.hdf5") as f:
        assert f["states1"].shape == (8 + 1 + 5 + 1, 8)


def test_demo_writes_a_complete_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--out",
                str(out),
                "--steps",
                "20",
                "--train-sentences",
                "400",
                "--per-distance",
                "6",
                "--max-test-distance",
                "5",
                "--max-train-distance",
                "4",
                "--hidden-size",
                "8",
                "--seeds",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "distance      RNN     LSTM   (mean over 2 seed(s))" in printed
    assert "best number cells" in printed
    assert "steps until mean accuracy >= 0.95 at distances 3-5" in printed
    assert "long-distance accuracy: intact" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["by_distance"]["lstm"]) == {str(k) for k in range(6)}
    assert set(summary["accuracy"]) == {"rnn", "lstm"}
    per_seed = summary["per_seed"]["lstm"]
    assert [p["seed"] for p in per_seed] == [0, 1]
    assert summary["accuracy"]["lstm"] == pytest.approx(
        (per_seed[0]["accuracy"] + per_seed[1]["accuracy"]) / 2
    )
    evals = summary["during_training"]["lstm"]
    assert [e["step"] for e in evals] == list(range(21))  # every max(1, steps // 12) steps
    assert evals[-1]["accuracy"] == per_seed[0]["accuracy"]
    assert len(summary["during_training_per_seed"]["rnn"]) == 2
    # the causal test: k of (1, 2, 4, 8) up to half the 8 cells, each against random cells
    for cell in ("rnn", "lstm"):
        ab = summary["ablation"][cell]
        assert set(ab) == {"intact", "1", "2", "4"}
        assert len(ab["4"]["random"]["long"]) == 4  # random_ablations draws
        probes = summary["probes"][cell]
        assert [p["name"].split(" (")[0] for p in probes] == [
            "best cell", "best 4 cells", "4 random cells", "all 8 cells"
        ]  # fmt: skip
        for p in probes:
            assert p["selectivity"] == pytest.approx(p["task_accuracy"] - p["control_accuracy"])
    figures = json.loads((out / "figures.json").read_text())
    assert set(figures) == {
        "accuracy_by_distance",
        "accuracy_by_attractors",
        "training_loss",
        "accuracy_during_training",
        "number_cell_over_time",
        "lstm_heatmaps",
        "lstm_text_cell",
        "lstm_saturation",
        "ablation",
    }
    page = (out / "index.html").read_text()
    for fig in figures.values():
        assert (out / fig["file"]).read_bytes()[:4] == b"\x89PNG" and fig["file"] in page
    assert (out / "inspect.html").is_file()
    for cell in ("rnn", "lstm"):
        assert (out / "models" / cell / "model.safetensors").is_file()


# ---- issue 10: one CLI ------------------------------------------------------------------------
def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


HELP_PAGES = [
    ["sample"],
    ["evaluate"],
    ["predict"],
    ["inspect"],
    *(["inspect", c] for c in ("plots", "html", "select", "predict", "lstmvis")),
    *(["tasks", c] for c in ("show", "train", "sweep")),
    *(["agreement", c] for c in ("generate", "train", "eval")),
    ["demo"],
    ["tour"],
]


@pytest.mark.parametrize("argv", HELP_PAGES, ids=" ".join)
def test_help_states_defaults_one_way(argv, capsys):
    """ "(default: X)" everywhere; never "(default X)", "; default lstm" or "(default: False)"."""
    out = _help(argv, capsys)
    flat = " ".join(out.split())  # argparse wraps lines anywhere
    assert not re.search(r"\(default(?!: )", flat), flat
    assert not re.search(r"[;,] default ", flat), flat
    assert "(default: False)" not in flat and "(default: True)" not in flat
    assert "(default: None)" not in flat
    if argv != ["inspect"]:
        assert "(default: " in flat


@pytest.mark.parametrize(
    "argv", [["demo"], ["tasks", "train"], ["tasks", "sweep"], ["agreement", "train"]], ids=" ".join
)
def test_threads_flag_is_the_same_everywhere(argv, capsys):
    """One default (1) and one meaning (0 = torch's default) in every command that trains;
    `lstmkit train` is to match (its flags live in lstmkit/cli/lm_flags.py)."""
    flat = " ".join(_help(argv, capsys).split())
    assert "--threads N torch CPU threads; 0 = torch's default (one per core) (default: 1)" in flat
    with pytest.raises(SystemExit) as e:
        main([*argv, "--threads", "-1"])
    assert e.value.code == 2
    assert "argument --threads: -1 is out of range" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tasks", "show", "-n", "0"], "argument -n: 0 is out of range"),
        (["tasks", "show", "--lag", "0"], "argument --lag: 0 is out of range"),
        (["tasks", "show", "--lag", str(10**14)], "give an integer from 1 to 100,000"),
        (["tasks", "show", "--seed", str(10**23)], "give an integer from 0 to 2**63 - 1025"),
        (["tasks", "train", "--batch-size", "0"], "argument --batch-size: 0 is out of range"),
        (["tasks", "train", "--test-size", "0"], "argument --test-size: 0 is out of range"),
        (["tasks", "train", "--window", "0"], "argument --window: 0 is out of range"),
        (["tasks", "train", "--lr", "nan"], "argument --lr: nan is out of range"),
        (["tasks", "train", "--clip", "0"], "give a finite number > 0"),
        (["tasks", "train", "--required-accuracy", "1.5"], "give a finite number > 0 and <= 1"),
        (["tasks", "train", "--max-sequences", "-1"], "argument --max-sequences: -1 is out"),
        (["tasks", "train", "--threads", "100000"], "argument --threads: 100000 is out"),
        (["demo", "--steps", "0"], "argument --steps: 0 is out of range"),
        (["demo", "--train-sentences", "10"], "give an integer >= 32"),
        (["demo", "--per-distance", "1"], "give an integer >= 2"),
        (["demo", "--max-seconds", "inf"], "argument --max-seconds: inf is out of range"),
        (["agreement", "generate", "--out", "x", "--train", "-1"], "argument --train: -1"),
        (["agreement", "generate", "--out", "x", "--max-distance", "-1"], "--max-distance: -1"),
        (["agreement", "train", "--data", "x", "--out", "y", "--steps", "0"], "--steps: 0 is"),
        (["agreement", "eval", "CK", "--data", "x", "--limit", "0"], "argument --limit: 0 is"),
        (["tour", "--steps", "0"], "argument --steps: 0 is out of range"),
        (["inspect", "select", "CK", "--text", "t", "--sentence", "-1", "--span", "0:1"], "-1"),
        (["inspect", "html", "CK", "--text", "t", "--out", "o", "--threshold", "nan"], "nan is"),
    ],
)
def test_number_flags_are_checked_before_anything_runs(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.fixture(scope="module")
def agreement_model(tmp_path_factory):
    """A 1-layer, 8-cell sentence LM trained for 2 steps, and a text to inspect it on."""
    d = tmp_path_factory.mktemp("agr")
    assert main(["agreement", "generate", "--out", str(d), "--train", "64"]) == 0
    argv = ["agreement", "train", "--data", str(d / "train.txt"), "--out", str(d / "lstm")]
    assert main([*argv, "--steps", "2", "--hidden-size", "8"]) == 0
    text = d / "text.txt"
    text.write_text("the cats near the dog are happy .\nthe dog is old .\n")
    return str(d / "lstm"), str(text), d


@pytest.mark.parametrize(
    "extra, message",
    [
        (["plots", "--out", "O", "--layer", "1"], "--layer 1 does not exist: this model has 1"),
        (["plots", "--out", "O", "--cell", "8"], "--cell 8 does not exist: the layer has 8 cells"),
        (["plots", "--out", "O", "--cells", "0,9"], "--cells: cell 9 does not exist"),
        (["plots", "--out", "O", "--cells", "a"], "--cells must be comma-separated cell numbers"),
        (["plots", "--out", "O", "--state", "q"], "--state 'q': this LSTM has the states"),
        (["html", "--out", "O", "--cell", "99"], "--cell 99 does not exist"),
        (["select", "--sentence", "5", "--span", "0:1"], "--sentence 5 does not exist"),
        (["select", "--sentence", "0", "--span", "a"], "--span must be A:B (two integers)"),
        (["select", "--sentence", "0", "--span", "3:1"], "span [3, 1) must lie inside"),
        (["predict"], "give --generated test.jsonl, or --text with --labels"),
        (["predict", "--generated", "MISSING"], "MISSING: No such file or directory"),
    ],
)
def test_inspect_mistakes_are_one_error_line(agreement_model, extra, message, capsys, tmp_path):
    ckpt, text, _ = agreement_model
    sub, *rest = extra
    rest = [
        {"O": str(tmp_path / "out"), "MISSING": str(tmp_path / "nowhere")}.get(a, a) for a in rest
    ]
    needs_text = sub != "predict"
    argv = ["inspect", sub, ckpt, *(["--text", text] if needs_text else []), *rest]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert message.replace("MISSING", str(tmp_path / "nowhere")) in captured.err


def test_inspect_checkpoint_given_once(agreement_model, capsys, tmp_path):
    ckpt, text, _ = agreement_model
    out = ["--text", text, "--out", str(tmp_path / "p.html")]
    assert main(["inspect", "html", *out]) == 1
    assert (
        "no checkpoint given; give its directory as the first argument" in capsys.readouterr().err
    )
    assert main(["inspect", "html", ckpt, "--checkpoint", str(tmp_path), *out]) == 1
    assert "two checkpoints given" in capsys.readouterr().err
    assert main(["inspect", "html", ckpt, "--checkpoint", ckpt, *out]) == 0  # the same one: fine
    assert main(["agreement", "eval", "--data", "x"]) == 1
    assert "lstmkit agreement eval CHECKPOINT" in capsys.readouterr().err


def test_heatmap_title_is_above_the_first_heatmap(agreement_model):
    """The figure title used to be drawn over the first heatmap (tight_layout ignores it)."""
    import matplotlib.pyplot as plt

    from lstmkit.inspect.plots import heatmaps_figure
    from lstmkit.inspect.states import collect_states
    from lstmkit.training.checkpoint import load_checkpoint

    ckpt, _, _ = agreement_model
    model, _, vocab, _ = load_checkpoint(ckpt)
    st = collect_states(model, vocab, [["the", "cats", "near", "the", "dog", "are", "happy"]])
    # tall (all cells, as in the report that showed it) and short (one cell) figures
    for cells in (None, [0]):
        fig, _ = heatmaps_figure(st, 0, cells=cells)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        title = fig._suptitle.get_window_extent(renderer)
        axes = fig.axes[: len(st.names)]  # the heatmaps (the colorbars come after them)
        for upper, lower in zip(axes, axes[1:]):  # each heatmap's labels clear the next one
            assert upper.get_tightbbox(renderer).y0 >= lower.get_tightbbox(renderer).y1 - 1
        first = axes[0].get_tightbbox(renderer)  # with its title and tick labels
        assert title.y0 >= first.y1 - 1, (title, first)
        plt.close(fig)


def test_inspect_shows_the_states_of_the_ablated_model(agreement_model, capsys, tmp_path):
    """inspect select --ablate: the zeroed cell units read 0 at every step, and only they do;
    the other units differ only from the step after the first edit on (they read the edited
    state through the recurrence)."""
    ckpt, text, _ = agreement_model
    argv = ["inspect", "select", ckpt, "--text", text, "--sentence", "0", "--span", "1:3"]
    argv += ["--threshold", "-10", "--state", "c"]  # every cell is 'on' above -10
    assert main(argv) == 0
    every = capsys.readouterr().out
    assert main([*argv, "--ablate", "0:c:2,5"]) == 0
    ablated = capsys.readouterr().out
    assert every != ablated

    from lstmkit.inspect.states import collect_states
    from lstmkit.intervene import Intervention
    from lstmkit.training.checkpoint import load_checkpoint

    model, _, vocab, _ = load_checkpoint(ckpt)
    sents = [line.split() for line in Path(text).read_text().splitlines()]
    plain = collect_states(model, vocab, sents)
    edit = Intervention.ablate(layer=0, units=[2, 5], state="c")
    cut = collect_states(model, vocab, sents, intervention=edit)
    for k in range(len(sents)):
        c0, c1 = plain.values["c"][k], cut.values["c"][k]
        assert (c1[:, [2, 5]] == 0).all() and (c0[:, [2, 5]] != 0).all()
        others = [u for u in range(8) if u not in (2, 5)]
        assert not np.allclose(c0[1:, others], c1[1:, others])  # they read the edit
    for bad, message in (("0:c", "three parts"), ("x:c:1", "LAYER:STATE:UNITS")):
        assert main([*argv, "--ablate", bad]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert main([*argv, "--ablate", "0:c:99"]) == 1
    assert "unit 99 is out of range" in capsys.readouterr().err


def test_demo_names_a_model_the_time_cap_stopped(tmp_path, capsys):
    """The comparison is at one budget of steps; a model cut short by --max-seconds breaks
    that, and the report says which."""
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--steps", "6", "--train-sentences", "64"]
    argv += ["--per-distance", "2", "--max-test-distance", "3", "--max-train-distance", "2"]
    argv += ["--hidden-size", "4", "--seeds", "1", "--max-seconds", "1e-9", "--no-progress"]
    assert main(argv) == 0
    page = (out / "index.html").read_text()
    assert "RNN seed 0 (1 steps), LSTM seed 0 (1 steps) stopped at the 1e-09 s cap" in page
    summary = json.loads((out / "summary.json").read_text())
    assert [t["steps"] for t in summary["training"]["lstm"]] == [1]
