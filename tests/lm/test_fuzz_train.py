"""The fuzz layer for `lstmkit train`: random config values and random flags (hypothesis).

The properties are the issue-10 rules in general form: a setting is either taken with the kind
and range it documents, or refused with a ValueError / `error: ...` sentence naming it; never
another exception, never a traceback. The ci profile (tests/conftest.py) is derandomized;
LSTMKIT_FUZZ=explore draws 400 fresh examples per property.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lm_helpers import write_corpus

from lstmkit.cli.main import main
from lstmkit.training.config import TrainConfig, merge_config
from lstmkit.training.model import ModelConfig

TRAIN_KEYS = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "model"]
MODEL_KEYS = [f.name for f in dataclasses.fields(ModelConfig) if f.name != "vocab_size"]

# what a TOML / JSON file can hold, with the values that broke things before weighted in
scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2, 10**6]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.5, 1.0, -0.1, float("nan"), float("inf")]),
    st.booleans(),
    st.text(max_size=8),
    st.sampled_from(["sgd", "adam", "step", "word", "char", "cpu", "lstm", "no", "10"]),
    st.none(),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=4), scalars, max_size=2),
)


def _kind_ok(value, annotation: str) -> bool:
    """The value fits its field's annotation (as TOML users read it)."""
    if value is None:
        return "None" in annotation
    if isinstance(value, bool):
        return annotation.startswith("bool")
    if annotation.startswith("int"):
        return isinstance(value, int)
    if annotation.startswith("float"):
        return isinstance(value, (int, float)) and math.isfinite(value)
    if annotation.startswith("str"):
        return isinstance(value, str)
    return True


@settings(max_examples=settings.default.max_examples * 8)  # pure Python: cheap
@given(key=st.sampled_from(TRAIN_KEYS + MODEL_KEYS), value=values, in_model=st.booleans())
def test_a_config_value_is_taken_as_documented_or_refused_by_name(key, value, in_model):
    file_values = {"model": {key: value}} if in_model else {key: value}
    try:
        cfg = merge_config(file_values, {}, "run.toml")
    except ValueError as e:
        assert "run.toml" in str(e)
        assert key in str(e) or "unknown" in str(e), str(e)
        return
    # accepted: then it is where it belongs, of its documented kind
    if key in MODEL_KEYS and (in_model or key not in TRAIN_KEYS):
        got, fields = cfg.model[key], {f.name: f for f in dataclasses.fields(ModelConfig)}
    else:
        got, fields = getattr(cfg, key), {f.name: f for f in dataclasses.fields(TrainConfig)}
    annotation = str(fields[key].type)
    assert _kind_ok(got, annotation), (key, got, annotation)


FLAG_VALUES = ["-1", "0", "1", "2", "0.5", "nan", "inf", "1e30", "abc", ""]
FLAGS = [
    "--min-count", "--max-vocab", "--emb-size", "--hidden-size", "--layers", "--dropout",
    "--init-range", "--embed-dropout", "--recurrent-dropout", "--weight-drop", "--zoneout",
    "--forget-bias", "--lr", "--momentum", "--weight-decay", "--clip", "--lr-decay",
    "--decay-after", "--epochs", "--batch-size", "--bptt", "--eval-batch-size", "--eval-every",
    "--max-steps", "--seed", "--device", "--threads", "--level", "--cell", "--engine",
    "--optimizer", "--schedule", "--init", "--loss-per",
]  # fmt: skip
SWITCHES = ["--tie-weights", "--variational", "--peephole", "--layer-norm", "--dry-run"]
CHOICES = {
    "--level": ["char", "word", "ptb"],
    "--cell": ["lstm", "gru", "rnn"],
    "--engine": ["auto", "reference", "fused"],
    "--optimizer": ["sgd", "adam"],
    "--schedule": ["constant", "step", "plateau"],
    "--init": ["torch", "uniform"],
    "--loss-per": ["token", "sequence"],
    "--device": ["cpu", "cuda", "tpu", "cuda:7"],
}


@st.composite
def flag_sets(draw):
    flags = draw(st.lists(st.sampled_from(FLAGS), max_size=4, unique=True))
    argv = []
    for flag in flags:
        pool = CHOICES.get(flag, []) + FLAG_VALUES
        argv += [flag, draw(st.sampled_from(pool))]
    argv += draw(st.lists(st.sampled_from(SWITCHES), max_size=2, unique=True))
    return argv


@settings(max_examples=max(10, settings.default.max_examples // 3))  # each one trains
@given(argv=flag_sets())
def test_random_train_flags_train_or_say_why(tmp_path_factory, capsys, argv):
    tmp = tmp_path_factory.mktemp("fuzz")
    # ~130 tokens: whatever the flags (--batch-size 1 --bptt 1 --max-steps 0 --epochs 2) the
    # run stays short
    train_file, valid_file = write_corpus(tmp, 20, 0), write_corpus(tmp, 8, 1, "valid.txt")
    base = [
        "train",
        "--train",
        str(train_file),
        "--valid",
        str(valid_file),
        "--out",
        str(tmp / "R"),
    ]
    small = ["--max-steps", "2", "--epochs", "1", "--bptt", "4", "--hidden-size", "4"]
    small += ["--emb-size", "4"]
    threads = torch.get_num_threads()
    try:
        try:
            code = main([*base, *small, "--no-progress", *argv])  # later flags win
        except SystemExit as e:  # argparse: a value of the wrong type or choice
            code = e.code
    finally:
        torch.set_num_threads(threads)  # --threads must not leak into the other tests
    out, err = capsys.readouterr()
    assert code in (0, 1, 2), (argv, code)
    if code == 1:
        assert "error: " in out + err, (argv, out, err)
    if code == 2:
        assert "error: " in err, (argv, err)
