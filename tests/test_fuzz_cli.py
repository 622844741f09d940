"""The fuzz layer over the inference commands' flags (issue 10): sample, evaluate, predict and
inspect, run in-process through lstmkit.cli.main.main with hostile values (negative, zero and
huge integers, nan / inf, strings that are not numbers, odd text and paths).

The property: exit status 0, or status 1 / 2 with an "error: ..." line on stderr, and never an
uncaught exception. Status 1 is lstmkit's own "error: <sentence>" (exactly one line); status 2
is argparse's usage error ("lstmkit CMD: error: argument --flag: ..." after the usage lines).

Each example gives every flag a valid value or leaves it out, then makes at most one flag
hostile: with all flags hostile at once nearly every example would stop at the first, and the
checks behind it (and the runs that succeed) would go untested.
`pytest --hypothesis-show-statistics` shows how the exit statuses are spread.
"""

from __future__ import annotations

import contextlib
import io
import random
import re

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from lstmkit.cli.main import main

WORDS = "the cat sat on a mat . a dog ran to the park . i drank apple juice".split()  # noqa: SIM905

# Integers as a user might type them: small ones (both signs), the edges of C types and torch's
# seed range, and numbers far past anything (the last is past int()'s 4,300-digit limit, too).
EDGES = [str(n) for n in (0, -1, 1, 2**31, -(2**31), 2**63 - 1025, 2**63, 2**64, -(2**64))]
EDGES += ["1" + "0" * 30, "9" * 4400]
not_a_number = st.sampled_from(["", "abc", "1.5", "1e3", "0x10", "nan", " 3", "\u0663", "1_0"])
hostile_int = st.one_of(st.integers(-3, 3).map(str), st.sampled_from(EDGES), not_a_number)
hostile_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e-300", "5e-324", "1e308", "-0.0", "0", "abc", ""]),
)
text = st.text(max_size=20)  # any unicode, including NUL, newlines and "-" first


def small(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.integers(lo, hi).map(str)


def flag_values(valid: dict, hostile: dict, required: tuple = ()) -> st.SearchStrategy[dict]:
    """{flag: value or None (left out)}: valid values (always one for a required flag), then at
    most one flag made hostile."""

    @st.composite
    def draw(draw_one):
        values = {
            k: draw_one(v if k in required else st.one_of(st.none(), v)) for k, v in valid.items()
        }
        bad = draw_one(st.sampled_from([None, *hostile]))
        if bad is not None:
            values[bad] = draw_one(hostile[bad])
        return values

    return draw()


def _write_corpus(path, lines: int, seed: int) -> None:
    rng = random.Random(seed)
    path.write_text(
        "\n".join(
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) for _ in range(lines)
        )
        + "\n",
        encoding="utf-8",
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A word-level and a char-level checkpoint (made once: 5 dry-run steps each), text files
    good and bad, and paths that are not what they claim."""
    d = tmp_path_factory.mktemp("fuzz_cli")
    train, valid = d / "train.txt", d / "valid.txt"
    _write_corpus(train, 60, 0)
    _write_corpus(valid, 8, 1)
    common = ["--emb-size", "8", "--hidden-size", "8", "--layers", "2", "--batch-size", "4"]
    common += ["--bptt", "8", "--no-progress", "--dry-run", "--train", str(train)]
    common += ["--valid", str(valid)]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", *common, "--out", str(d / "word")]) == 0
        assert main(["train", *common, "--level", "char", "--out", str(d / "char")]) == 0
    (d / "empty.txt").write_text("")
    (d / "latin1.txt").write_bytes(b"the caf\xe9 sat\n")
    (d / "sents.txt").write_text("the cat sat on a mat .\na dog ran to the park .\n")
    (d / "empty_dir").mkdir()
    return {
        "word": str(d / "word" / "best"),
        "char": str(d / "char" / "best"),
        "run": str(d / "word"),  # a run directory, not a checkpoint
        "missing": str(d / "nowhere"),
        "file": str(valid),  # a file where a directory belongs
        "empty_dir": str(d / "empty_dir"),
        "valid": str(valid),
        "empty": str(d / "empty.txt"),
        "latin1": str(d / "latin1.txt"),
        "sents": str(d / "sents.txt"),
    }


CHECKPOINTS = st.sampled_from(["word", "word", "word", "char", "run", "missing", "file"])


def _flags(values: dict) -> list[str]:
    """--name=value for each value (None: flag left out). The = form lets "-5" and "-x" reach
    the flag's own check instead of being read as another option."""
    return [f"--{k.replace('_', '-')}={v}" for k, v in values.items() if v is not None]


def outcome(argv: list[str]) -> None:
    """check_cli inside a property test, counting the exit statuses (see the docstring)."""
    event(f"exit status {check_cli(argv)}")


def check_cli(argv: list[str]) -> int:
    """Run the command; assert the property; return the exit status."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: 2 for a usage error
            code = e.code
    message = err.getvalue()
    assert "Traceback" not in message, f"{argv}: {message}"
    assert code in (0, 1, 2), f"{argv}: exit status {code!r}, stderr {message!r}"
    if code == 0:
        return code
    lines = [ln for ln in message.splitlines() if ln.strip()]
    assert lines, f"{argv}: exit status {code} without a message"
    if code == 1:
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{argv}: {message!r}"
        assert len(lines[0]) > len("error: ") + 10, f"{argv}: no sentence in {message!r}"
    else:
        assert re.match(r"(lstmkit[\w ]*: )?error: \S", lines[-1]), f"{argv}: {message!r}"
    return code


SAMPLE = flag_values(
    valid={
        "length": small(0, 12),
        "temperature": st.sampled_from(["1", "0.5", "2.0", "1e-300", "1e308"]),
        "top_k": small(0, 40),
        "seed": small(0, 10**6),
        "prime": st.sampled_from(["", "the cat", "the ", "a dog ran"]),
    },
    hostile={
        # valid but slow lengths (12 < n <= 10^7) are not drawn: they test patience
        "length": st.one_of(small(-3, -1), st.sampled_from(EDGES[3:]), not_a_number),
        "temperature": hostile_float,
        "top_k": hostile_int,
        "seed": hostile_int,
        "prime": text,
    },
)


@given(ckpt=CHECKPOINTS, flags=SAMPLE)
def test_sample_flags(files, ckpt, flags):
    outcome(["sample", files[ckpt], *_flags(flags)])


EVALUATE = flag_values(
    valid={
        "batch_size": small(1, 40),
        "bptt": small(1, 200),
        "encoding_errors": st.sampled_from(["strict", "replace"]),
    },
    hostile={
        "batch_size": hostile_int,
        "bptt": hostile_int,
        "encoding_errors": st.sampled_from(["ignore", "", "STRICT"]),
    },
)


@given(
    ckpt=CHECKPOINTS,
    path=st.sampled_from(["valid", "valid", "valid", "empty", "latin1", "missing", "empty_dir"]),
    flags=EVALUATE,
    as_json=st.booleans(),
)
def test_evaluate_flags(files, ckpt, path, flags, as_json):
    argv = ["evaluate", files[ckpt], files[path], *_flags(flags)]
    outcome(argv + (["--json"] if as_json else []))


@given(
    ckpt=CHECKPOINTS,
    k=st.one_of(st.none(), small(1, 40), hostile_int),
    prefix=st.one_of(st.sampled_from(["", "the", "i drank apple", "pear"]), text),
    as_json=st.booleans(),
)
def test_predict_flags(files, ckpt, k, prefix, as_json):
    # "--" ends the options, so a prefix such as "-x" is still the prefix
    argv = ["predict", *_flags({"top_k": k}), *(["--json"] if as_json else []), files[ckpt]]
    outcome([*argv, "--", prefix])


hostile_state = st.one_of(st.sampled_from(["z", "", "C", "gates"]), text)
INSPECT_COMMON_VALID = {
    "layer": st.sampled_from(["0", "1", "-1", "-2"]),
    "max_sentences": small(1, 5),
    "bos": st.sampled_from(["", "<eos>", "cat"]),
    "state": st.sampled_from(["c", "h", "f", "i"]),
}
INSPECT_COMMON_HOSTILE = {
    "layer": hostile_int,
    "max_sentences": hostile_int,
    "bos": text,
    "state": hostile_state,
}

SELECT = flag_values(
    valid={
        "sentence": small(0, 1),
        "span": st.sampled_from(["0:2", "1:3", "0:1", "2:5"]),
        "threshold": st.sampled_from(["0.3", "-5", "0", "0.9"]),
        "off_around": small(0, 3),
        "top": small(1, 10),
        **INSPECT_COMMON_VALID,
    },
    hostile={
        "sentence": hostile_int,
        "span": st.one_of(st.sampled_from(["2:1", "0:0", "-1:2", "0:99", "1", "a:b", ""]), text),
        "threshold": hostile_float,
        "off_around": hostile_int,
        "top": hostile_int,
        **INSPECT_COMMON_HOSTILE,
    },
    required=("sentence", "span"),
)


@given(ckpt=st.sampled_from(["word", "word", "word", "char", "missing"]), flags=SELECT)
def test_inspect_select_flags(files, ckpt, flags):
    outcome(["inspect", "select", files[ckpt], "--text", files["sents"], *_flags(flags)])


PLOTS = flag_values(
    valid={
        "cell": small(0, 7),
        "cells": st.sampled_from(["0", "0,7", "3,1,2"]),
        "heatmaps": small(0, 1),
        **INSPECT_COMMON_VALID,
    },
    hostile={
        "cell": hostile_int,
        "cells": st.one_of(st.sampled_from(["8", "-1", "1,,2", "a", "", "0;1"]), text),
        "heatmaps": hostile_int,
        **INSPECT_COMMON_HOSTILE,
    },
)


@given(
    flags=PLOTS,
    text_file=st.sampled_from(["sents", "sents", "sents", "empty", "latin1", "missing"]),
)
def test_inspect_plots_flags(files, tmp_path, flags, text_file):
    # one sentence and at most one heatmap: the pictures are slow, their flags are the point
    flags["max_sentences"] = "1" if flags["max_sentences"] is None else flags["max_sentences"]
    argv = ["inspect", "plots", files["word"], "--text", files[text_file]]
    outcome(argv + ["--out", str(tmp_path / "plots"), *_flags(flags)])


@given(
    which=st.sampled_from(["html", "lstmvis", "predict"]),
    cell=st.one_of(st.none(), small(0, 7), hostile_int),
    threshold=st.one_of(st.none(), st.sampled_from(["0.3", "-1"]), hostile_float),
    top=st.one_of(st.none(), small(1, 10), hostile_int),
    labels=st.sampled_from(["good", "good", "short", "bad", "all skipped", "missing"]),
)
def test_inspect_html_lstmvis_predict_flags(files, tmp_path, which, cell, threshold, top, labels):
    argv = ["inspect", which, files["word"], "--text", files["sents"]]
    if which == "html":
        argv += ["--out", str(tmp_path / "p.html"), *_flags({"cell": cell, "threshold": threshold})]
    elif which == "lstmvis":
        argv += ["--out", str(tmp_path / "vis")]
    else:
        lab = tmp_path / "labels.txt"
        lab.write_text(
            {
                "good": "0 0 1 1 0 1 0\n1 0 1 0 0 1 1 0\n",
                "short": "0 1\n",
                "bad": "0 2 1 1 0 1 0\n1 0 1 0 0 1 1 0\n",
                "all skipped": "- - - - - - -\n- - - - - - - -\n",
            }.get(labels, "")
        )
        path = str(lab) if labels != "missing" else files["missing"]
        argv += ["--labels", path, *_flags({"top": top})]
    outcome(argv)


def test_the_property_tells_outcomes_apart(files, monkeypatch):
    """The checker itself: a good run, lstmkit's error, argparse's error, and a crash."""
    assert check_cli(["predict", files["word"], "the"]) == 0
    assert check_cli(["sample", files["word"], "--temperature=nan"]) == 1
    assert check_cli(["sample", files["word"], "--length=abc"]) == 2

    def crash(*args, **kwargs):
        raise RuntimeError("an unexpected failure")

    monkeypatch.setattr("lstmkit.training.inference.sample", crash)
    with pytest.raises(RuntimeError, match="unexpected"):
        check_cli(["sample", files["word"]])
