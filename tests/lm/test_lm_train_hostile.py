"""Issue 10's findings in `lstmkit train`, one test each: data lost, silent wrong results and
tracebacks where a sentence belongs. Every command goes through the CLI's main(), so a traceback
is a failed test; an error must be one `error: ...` line naming what was wrong."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from lm_helpers import tiny_corpus

from lstmkit.cli.main import main
from lstmkit.training import load_checkpoint
from lstmkit.training.checkpoint import load_training_state

TINY = ["--hidden-size", "12", "--emb-size", "12", "--layers", "1", "--batch-size", "4"]
TINY += ["--bptt", "8", "--no-progress"]


@pytest.fixture
def files(tmp_path):
    return tiny_corpus(tmp_path)


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def train(capsys, files, out, *extra, valid=True):
    argv = ["train", "--train", files[0], "--out", out, *TINY, *extra]
    if valid:
        argv += ["--valid", files[1]]
    return cli(capsys, *argv)


def refused(result, *phrases) -> str:
    """The command failed with one error sentence that contains every phrase."""
    code, _, err = result
    assert code == 1, f"expected a refusal, got exit status {code}; stderr: {err}"
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for phrase in phrases:
        assert phrase in lines[0], f"{phrase!r} not in {lines[0]!r}"
    return lines[0]


def step_of(path: Path) -> int:
    return load_checkpoint(path).meta["state"]["state"]["step"]


def log_entries(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def tree_digest(run: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


# ---- 1. data lost: a fresh run over a run directory -------------------------------------------
@pytest.mark.parametrize("leftover", ["old", "best", "log"])
def test_a_fresh_run_never_writes_over_or_beside_a_previous_run(tmp_path, capsys, files, leftover):
    run = tmp_path / "R"
    assert train(capsys, files, run, "--max-steps", 12, "--eval-every", 6)[0] == 0
    if leftover == "old":  # what a crash between the two renames of a save leaves
        (run / "last").rename(run / ".last.old")
    elif leftover == "best":
        shutil.rmtree(run / "last")
        (run / "log.jsonl").unlink()
    else:
        shutil.rmtree(run / "last")
        shutil.rmtree(run / "best")
    before = tree_digest(run)
    refused(train(capsys, files, run, "--max-steps", 3), "already holds a run", "--resume")
    kept = {k: v for k, v in tree_digest(run).items() if not k.startswith("last/")}
    # nothing of the previous run was touched (a .last.old may have been put back as last)
    assert kept == {k: v for k, v in before.items() if not k.startswith(".last.old/")}
    if leftover == "old":
        assert step_of(run / "last") == 12  # the 30-step model of the issue, not a 3-step one


def test_out_that_is_a_file_is_refused_before_training(tmp_path, capsys, files):
    f = tmp_path / "R"
    f.write_text("not a directory")
    refused(train(capsys, files, f, "--max-steps", 3), "is a file", "run directory")
    assert f.read_text() == "not a directory"


# ---- 4, 5, 8: numbers that cannot mean anything ----------------------------------------------
@pytest.mark.parametrize(
    "flags, phrase",
    [
        (["--lr", "inf"], "lr must be a finite number"),
        (["--lr", "nan"], "lr must be a finite number"),
        (["--lr", "-1"], "lr must be > 0"),
        (["--schedule", "step", "--lr-decay", "-1"], "lr_decay"),
        (["--schedule", "step", "--lr-decay", "0"], "lr_decay"),
        (["--decay-after", "-1000"], "decay_after"),
        (["--threads", "-1"], "threads must be in [0, "),
        (["--threads", "100000"], "threads must be in [0, "),
        (["--device", "tpu"], "device must be auto, cpu, cuda, cuda:N or mps"),
        (["--device", "meta"], "device must be"),
        (["--init", "uniform", "--init-range", "-0.1"], "init_range"),
        (["--init", "uniform", "--init-range", "nan"], "init_range must be a finite number"),
        (["--seed", str(2**70)], "seed must be in"),
        (["--seed", "-1"], "seed must be in"),
        (["--momentum", "1.5"], "momentum"),
        (["--clip", "-1"], "clip"),
        (["--forget-bias", "nan"], "forget_bias must be a finite number"),
        (["--dropout", "nan"], "dropout"),
        (["--max-vocab", "0"], "max_vocab"),
    ],
)
def test_a_setting_out_of_range_is_one_sentence(tmp_path, capsys, files, flags, phrase):
    refused(train(capsys, files, tmp_path / "R", *flags), phrase)
    assert not (tmp_path / "R").exists()  # refused before anything was written


def test_a_huge_lr_never_leaves_a_non_finite_checkpoint(tmp_path, capsys, files):
    """--lr 1e30 passes the range checks; the loss explodes (or the update overflows). The run
    must stop, and whatever `last` it keeps holds finite numbers only."""
    run = tmp_path / "R"
    for clip in ("0.25", "0"):  # clipped: huge finite weights; unclipped: inf
        shutil.rmtree(run, ignore_errors=True)
        code, out, _ = train(
            capsys, files, run, "--lr", "1e30", "--clip", clip, "--eval-every", "1", valid=False
        )
        assert code == 1 and ("error: the run diverged" in out or "loss became" in out), out
        if (run / "last").exists():
            ckpt = load_checkpoint(run / "last")
            assert all(torch.isfinite(t).all() for t in ckpt.model.state_dict().values())
    if (run / "last").exists():
        ckpt = load_checkpoint(run / "last")
        assert all(torch.isfinite(t).all() for t in ckpt.model.state_dict().values())


def test_adam_gets_adams_learning_rate(tmp_path, capsys, files):
    run = tmp_path / "R"
    assert train(capsys, files, run, "--optimizer", "adam", "--max-steps", 2)[0] == 0
    assert load_checkpoint(run / "last").meta["train"]["lr"] == 1e-3
    code, out, _ = train(capsys, files, tmp_path / "R2", "--optimizer", "adam", "--lr", "20",
                         "--max-steps", "1")  # fmt: skip
    assert code == 0 and "warning: lr 20 with adam is far above its usual range" in out


def test_a_diverged_run_is_called_diverged(tmp_path, capsys, files):
    """Adam at SGD's lr (the issue's 1.7e129 perplexity): after an epoch the validation loss is
    far worse than a uniform guess; the run stops and says so instead of finishing."""
    run = tmp_path / "R"
    code, out, _ = train(
        capsys, files, run, "--optimizer", "adam", "--lr", "20", "--clip", "0", "--epochs", "3"
    )
    assert code == 1, out
    assert "error: the run diverged" in out and "uniform guess" in out
    assert "last good checkpoint" in out
    entries = log_entries(run) if (run / "log.jsonl").exists() else []
    vocab = len(json.loads((run / "last" / "vocab.json").read_text())["itos"]) if entries else 0
    for e in entries:  # every saved validation that is worse than uniform is marked
        if e["valid"] and e["valid"]["nats"] > math.log(vocab) + 1:
            assert e.get("diverged") is True


# ---- 6, 13: config files with values of the wrong kind ----------------------------------------
@pytest.mark.parametrize(
    "text, phrase",
    [
        ('dry_run = "no"', "dry_run must be true or false"),
        ("epochs = 2.5", "epochs must be an integer"),
        ('lr = "fast"', "lr must be a finite number"),
        ('bptt = "10"', "bptt must be an integer"),
        ("model = 5", "model must be a table"),
        ("train_file = 5", "train_file must be a string"),
        ("valid_file = true", "valid_file must be a string"),
        ('seed = "1"', "seed must be an integer"),
        ("lr = [1, 2]", "lr must be a finite number"),
        ('max_vocab = "10"', "max_vocab must be an integer"),
        ('[model]\nhidden_size = "12"', "hidden_size must be an integer"),
        ('[model]\npeephole = "no"', "peephole must be true or false"),
        ("lr = inf", "lr must be a finite number"),
    ],
)
def test_toml_values_of_the_wrong_kind(tmp_path, capsys, files, text, phrase):
    config = tmp_path / "run.toml"
    top = "" if "train_file" in text else f"train_file = {json.dumps(str(files[0]))}\n"
    config.write_text(top + text + "\n")
    argv = ["train", "--config", config, "--out", tmp_path / "R", "--no-progress"]
    line = refused(cli(capsys, *argv), phrase)
    assert str(config) in line  # the message says which file to fix


def test_json_null_where_a_number_belongs(tmp_path, capsys, files):
    config = tmp_path / "run.json"
    config.write_text('{"clip": null}')
    refused(train(capsys, files, tmp_path / "R", "--config", config), "clip must be a finite")


# ---- 7, 15: resume with other settings, or past its end ----------------------------------------
@pytest.fixture
def run10(tmp_path, capsys, files):
    """A run stopped at step 10 (validations at 5 and 10), Adam, resumable."""
    run = tmp_path / "R"
    flags = ("--optimizer", "adam", "--max-steps", 10, "--eval-every", 5)
    assert train(capsys, files, run, *flags)[0] == 0
    return run


@pytest.mark.parametrize(
    "flags, key",
    [
        (["--bptt", "9"], "'bptt'"),
        (["--lr", "0.01"], "'lr'"),
        (["--batch-size", "5"], "'batch_size'"),
        (["--optimizer", "sgd"], "'optimizer'"),
        (["--seed", "7"], "'seed'"),
        (["--hidden-size", "14"], "hidden_size"),
    ],
)
def test_resume_with_other_settings_is_refused(capsys, files, run10, flags, key):
    before = tree_digest(run10)
    base = ["--optimizer", "adam", "--eval-every", "5"]
    refused(train(capsys, files, run10, *base, *flags, "--resume"), "cannot resume", key)
    assert tree_digest(run10) == before


def test_resume_at_max_steps_does_nothing(capsys, files, run10):
    before = tree_digest(run10)
    code, out, _ = train(
        capsys, files, run10, "--optimizer", "adam", "--eval-every", 5, "--max-steps", 10,
        "--resume",
    )  # fmt: skip
    assert code == 0 and "nothing to do" in out and "done: 10 steps" in out
    assert tree_digest(run10) == before


def test_max_steps_stops_log_true_train_losses(run10):
    entries = log_entries(run10)
    assert [e["step"] for e in entries] == [5, 10]  # no second entry for the stop at step 10
    assert all(e["train_nats"] > 0 for e in entries)


def test_resume_from_a_state_past_the_end_of_the_data(capsys, files, run10):
    """state.json edited (manifest recomputed) to a window past the end: a sentence, not an
    IndexError or a silent epoch skip."""
    last = run10 / "last"
    meta = json.loads((last / "state.json").read_text())
    meta["state"]["window"] = 10_000
    (last / "state.json").write_text(json.dumps(meta))
    manifest = json.loads((last / "manifest.json").read_text())
    data = (last / "state.json").read_bytes()
    manifest["files"]["state.json"] = {
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    (last / "manifest.json").write_text(json.dumps(manifest))
    refused(
        train(capsys, files, run10, "--optimizer", "adam", "--eval-every", 5, "--resume"),
        "does not fit this training data",
    )


def test_resume_continues_after_a_clean_stop(capsys, files, run10):
    """The good path stays good: the same settings resume and the log grows from step 10."""
    flags = ("--optimizer", "adam", "--eval-every", 5, "--max-steps", 20, "--resume")
    assert train(capsys, files, run10, *flags)[0] == 0
    state, _ = load_training_state(run10 / "last")
    assert state["step"] == 20
    assert [e["step"] for e in log_entries(run10)] == [5, 10, 15, 20]
