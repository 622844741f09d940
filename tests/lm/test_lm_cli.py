import json
import re

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


# ---- issue 10, item 14: every number flag of sample / evaluate / predict is checked ----------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A dry-run checkpoint and a text file, made once for the tests below."""
    d = tmp_path_factory.mktemp("tiny_run")
    train_file, valid_file = tiny_corpus(d)
    argv = ["train", "--train", str(train_file), "--out", str(d / "run"), "--emb-size", "8"]
    argv += ["--hidden-size", "8", "--batch-size", "4", "--bptt", "8", "--no-progress"]
    assert main([*argv, "--dry-run"]) == 0
    return str(d / "run" / "last"), str(valid_file)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "CK", "FILE", "--bptt", "0"], "bptt must be >= 1, got 0"),
        (["evaluate", "CK", "FILE", "--bptt", "-3"], "bptt must be >= 1, got -3"),
        (["evaluate", "CK", "FILE", "--batch-size", "0"], "batch_size must be >= 1, got 0"),
        (["evaluate", "CK", "FILE", "--batch-size", "-5"], "batch_size must be >= 1, got -5"),
        (["sample", "CK", "--temperature", "nan"], "temperature must be a finite number > 0"),
        (["sample", "CK", "--temperature", "inf"], "temperature must be a finite number > 0"),
        (["sample", "CK", "--temperature", "0"], "temperature must be a finite number > 0"),
        (["sample", "CK", "--temperature", "-1"], "temperature must be a finite number > 0"),
        (["sample", "CK", "--length", "-1"], "length must be from 0 to 10,000,000, got -1"),
        (["sample", "CK", "--length", str(10**14)], "length must be from 0 to 10,000,000"),
        (["sample", "CK", "--top-k", "-1"], "top_k must be >= 0, got -1"),
        (["sample", "CK", "--seed", "-1"], "seed must be from 0 to 2**63 - 1025, got -1"),
        (["sample", "CK", "--seed", str(10**23)], "seed must be from 0 to 2**63 - 1025"),
        (["predict", "CK", "the", "-k", "0"], "k must be >= 1, got 0"),
        (["predict", "CK", "the", "-k", "-4"], "k must be >= 1, got -4"),
    ],
)
def test_number_flags_out_of_range_are_one_error_line(tiny_run, argv, message, capsys):
    ckpt, text = tiny_run
    argv = [{"CK": ckpt, "FILE": text}.get(a, a) for a in argv]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err
    assert captured.err.count("\n") == 1 and captured.out == ""


def test_number_flags_at_their_edges_work(tiny_run, capsys):
    ckpt, text = tiny_run
    # a tiny temperature is greedy decoding: the same text whatever the seed (it was nan)
    greedy = [
        main(["sample", ckpt, "--length", "8", "--temperature", "1e-300", "--seed", s])
        for s in ("0", "1")
    ]
    assert greedy == [0, 0]
    first, second = capsys.readouterr().out.splitlines()
    assert first == second
    assert main(["sample", ckpt, "--length", "0", "--seed", str(2**63 - 1025)]) == 0
    assert main(["sample", ckpt, "--length", "3", "--top-k", "100000"]) == 0  # k > vocabulary
    assert main(["evaluate", ckpt, text, "--bptt", "1", "--batch-size", "100000"]) == 0
    assert main(["predict", ckpt, "the", "-k", str(10**30)]) == 0
    capsys.readouterr()


def test_library_checks_its_arguments_before_loading():
    """Python callers get the same sentences; a bad argument is reported before the checkpoint
    is read (the path below does not exist, and the error is not about it)."""
    from lstmkit.training.config import MAX_SEED
    from lstmkit.training.inference import SEED_TEXT, evaluate, predict, sample

    nowhere = "no/such/checkpoint"
    for kwargs, message in [
        ({"temperature": float("nan")}, "temperature must be a finite number > 0, got nan"),
        ({"temperature": 0}, "temperature must be a finite number > 0, got 0"),
        ({"length": -1}, "length must be from 0 to 10,000,000"),
        ({"top_k": -2}, "top_k must be >= 0, got -2"),
        ({"seed": 2**64}, "seed must be from 0 to 2**63 - 1025"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            sample(nowhere, **kwargs)
    for kwargs, message in [
        ({"length": 2.5}, "length must be an integer, got 2.5"),
        ({"seed": True}, "seed must be an integer, got True"),
        ({"top_k": "3"}, "top_k must be an integer, got '3'"),
        ({"temperature": "hot"}, "temperature must be a number, got 'hot'"),
        ({"prime": 5}, "prime must be a string, got int"),
    ]:
        with pytest.raises(TypeError, match=re.escape(message)):
            sample(nowhere, **kwargs)
    with pytest.raises(ValueError, match="bptt must be >= 1, got 0"):
        evaluate(nowhere, "x.txt", bptt=0)
    with pytest.raises(ValueError, match="errors must be one of"):
        evaluate(nowhere, "x.txt", errors="ignore")
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        predict(nowhere, "the", k=0)
    assert SEED_TEXT == "2**63 - 1025" and MAX_SEED == 2**63 - 1025  # the messages say this


def test_inference_help_says_default_one_way(capsys):
    for cmd in ("sample", "evaluate", "predict"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        out = capsys.readouterr().out
        assert "(default: " in out
        assert not re.search(r"\(default(?!: )", out), out  # "(default 200)" was the old form
        assert not re.search(r"--json\s+print the result as JSON \(default", out)
