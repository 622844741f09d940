"""The commands end to end on tiny settings: tasks, agreement, inspect and the demo."""

from __future__ import annotations

import json

import h5py
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
                "--checkpoint",
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
    out = capsys.readouterr().out
    assert "on 2 items" in out and "OOV share of context words 10.0%" in out
    assert "more frequent subject number would score 0.500" in out

    text = tmp_path / "text.txt"
    text.write_text("the cats near the dog are happy .\nthe dog is old .\n")
    ck = ["--checkpoint", str(d / "lstm"), "--text", str(text)]
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
    assert "span 1:3 = 'cats near'; c >= -5.0: 8 cells" in capsys.readouterr().out
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
    assert "logistic regression" in capsys.readouterr().out
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
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "distance     RNN@10    LSTM@10     RNN@20    LSTM@20" in printed
    assert "best number cells" in printed and "mean accuracy >= 0.95 at distances 3-5" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["by_distance"]["lstm"]) == {str(k) for k in range(6)}
    assert set(summary["accuracy"]) == {"rnn", "lstm"}
    evals = summary["during_training"]["lstm"]
    assert [e["step"] for e in evals] == list(range(21))  # every max(1, steps // 12) steps
    assert evals[-1]["accuracy"] == summary["accuracy"]["lstm"]
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
    }
    page = (out / "index.html").read_text()
    for fig in figures.values():
        assert (out / fig["file"]).read_bytes()[:4] == b"\x89PNG" and fig["file"] in page
    assert (out / "inspect.html").is_file()
    for cell in ("rnn", "lstm"):
        assert (out / "models" / cell / "model.safetensors").is_file()
