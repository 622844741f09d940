import json

import pytest
from lm_helpers import tiny_corpus

from lstmkit.cli.main import main
from lstmkit.training import load_checkpoint


@pytest.fixture
def corpus(tmp_path):
    return tiny_corpus(tmp_path)


def _train(tmp_path, corpus, *extra):
    train_file, valid_file = corpus
    return main(
        [
            "train",
            "--train",
            str(train_file),
            "--valid",
            str(valid_file),
            "--out",
            str(tmp_path / "run"),
            "--emb-size",
            "12",
            "--hidden-size",
            "12",
            "--batch-size",
            "4",
            "--bptt",
            "8",
            "--no-progress",
            *extra,
        ]
    )


def test_end_to_end_dry_run_sample_evaluate_predict(tmp_path, corpus, capsys):
    assert _train(tmp_path, corpus, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "done: 5 steps (dry_run)" in out
    best = str(tmp_path / "run" / "best")

    assert (
        main(
            [
                "sample",
                best,
                "--prime",
                "the cat",
                "--length",
                "12",
                "--seed",
                "3",
                "--temperature",
                "0.7",
                "--top-k",
                "5",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert text.startswith("the cat ") and len(text.split()) >= 3
    assert (
        main(
            [
                "sample",
                best,
                "--prime",
                "the cat",
                "--length",
                "12",
                "--seed",
                "3",
                "--temperature",
                "0.7",
                "--top-k",
                "5",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == text  # the seed makes it reproducible

    assert main(["evaluate", best, str(corpus[1]), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["tokens"] > 100 and 1 < r["ppl"] < 100 and r["unk_rate"] == 0.0

    assert main(["predict", best, "i drank apple", "-k", "4", "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    probs = [e["p"] for e in p["next"]]
    assert len(probs) == 4 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    assert main(["predict", best, "i drank pear"]) == 0
    assert "not in the vocabulary, read as <unk>: ['pear']" in capsys.readouterr().out


def test_config_file_with_flag_override(tmp_path, corpus):
    train_file, valid_file = corpus
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        f'train_file = "{train_file}"\nvalid_file = "{valid_file}"\n'
        f'out = "{tmp_path / "run"}"\nbatch_size = 4\nbptt = 8\nmax_steps = 3\n'
        f"progress = false\n[model]\nhidden_size = 10\nemb_size = 10\n"
        f'cell = "gru"\n'
    )
    assert main(["train", "--config", str(cfg), "--hidden-size", "14", "--emb-size", "14"]) == 0
    ckpt = load_checkpoint(tmp_path / "run" / "last")
    assert ckpt.config.hidden_size == 14 and ckpt.config.cell == "gru"  # flag beat the file
    assert ckpt.meta["train"]["max_steps"] == 3
    (tmp_path / "bad.json").write_text(json.dumps({"train_file": "x", "hidden_size": 3}))
    assert main(["train", "--config", str(tmp_path / "bad.json")]) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--train", "missing.txt"], "does not exist"),
        (["train"], "no training file"),
        (["evaluate", "nowhere", "x.txt"], "does not exist"),
        (["predict", "nowhere", "hi"], "does not exist"),
    ],
)
def test_errors_are_one_line_and_exit_1(tmp_path, argv, message, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_non_utf8_training_file(tmp_path, corpus, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(corpus[0].read_bytes() + b"caf\xe9\n")
    train_file, valid_file = corpus
    args = [
        "train",
        "--train",
        str(bad),
        "--out",
        str(tmp_path / "r"),
        "--hidden-size",
        "8",
        "--emb-size",
        "8",
        "--batch-size",
        "4",
        "--bptt",
        "8",
        "--no-progress",
        "--max-steps",
        "2",
    ]
    assert main(args) == 1
    assert "not valid UTF-8" in capsys.readouterr().err
    assert main([*args, "--encoding-errors", "replace"]) == 0


def test_help_explains_every_subcommand(capsys):
    for cmd in ("train", "sample", "evaluate", "predict"):
        with pytest.raises(SystemExit) as exit_info:
            main([cmd, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "usage: lstmkit " + cmd in out
        if cmd == "train":
            for flag in ("--resume", "--dry-run", "--eval-every", "--config", "--clip", "--bptt"):
                assert flag in out
            assert "(default: " in out
