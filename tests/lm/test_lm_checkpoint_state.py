"""The training state of a resumable checkpoint (lstmkit/training/checkpoint_state.py): what a
tampered or mismatched state.json / state.safetensors is refused with, and what a valid one that
takes a less common path (AMSGrad, foreach, a number for `step`, an optimizer of one's own, CUDA
RNG states) restores exactly. The edits are a forger's, as in test_lm_checkpoint_hostile.py: the
file changed by hand, the manifest recomputed."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch
from test_lm_checkpoint_hostile import VOCAB, _edit_json, _edit_tensors, _model, _refused

from lstmkit.training.checkpoint import (
    load_training_state,
    optimizer_from_flat,
    optimizer_to_flat,
    save_checkpoint,
)


def _saved(d, make_opt=None, steps=2, state_tensors=None):
    """A resumable checkpoint of the tiny model after `steps` optimizer steps (Adam, lr 1e-2, by
    default); returns the optimizer, whose state the checkpoint holds."""
    m, cfg = _model(0)
    opt = (make_opt or (lambda p: torch.optim.Adam(p, lr=1e-2)))(m.parameters())
    for _ in range(steps):
        opt.zero_grad()
        m(torch.randint(0, len(VOCAB), (4, 2)))[0].sum().backward()
        opt.step()
    save_checkpoint(
        d, m, cfg, VOCAB, optimizer=opt, state={"step": steps}, state_tensors=state_tensors,
        save_rng=True,
    )  # fmt: skip
    return opt


@pytest.fixture(scope="module")
def adam_ck(tmp_path_factory):
    d = tmp_path_factory.mktemp("adam") / "ck"
    return d, _saved(d)


@pytest.fixture
def ck(adam_ck, tmp_path):
    """A fresh copy of the Adam checkpoint, to edit."""
    shutil.copytree(adam_ck[0], tmp_path / "ck")
    return tmp_path / "ck"


def _fresh(cls=torch.optim.Adam, **kw):
    return cls(_model(1)[0].parameters(), **({"lr": 0.5} | kw))


def _assert_same_state(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys() and sa["state"]
    for pid, entry in sa["state"].items():
        assert entry.keys() == sb["state"][pid].keys(), pid
        for k, v in entry.items():
            w = sb["state"][pid][k]
            assert torch.equal(v, w) if isinstance(v, torch.Tensor) else v == w, (pid, k)


def _refused_untouched(d, opt, match):
    """Refused with `match`, and neither the optimizer nor an RNG changed."""
    torch_rng, py_rng, np_rng = torch.get_rng_state(), random.getstate(), np.random.get_state()
    _refused(load_training_state, d, opt, match=match)
    assert opt.state_dict()["state"] == {} and opt.param_groups[0]["lr"] == 0.5
    assert torch.equal(torch.get_rng_state(), torch_rng) and random.getstate() == py_rng
    assert np.random.get_state()[1].tolist() == np_rng[1].tolist()


# ---- state.json's outline: the field, and what it must be ----------------------------------
def _opt(s):
    return s["optimizer"]


OUTLINE = [
    (lambda s: s.update(state=[]), r"'state' must be an object: the training state \(step, dat"),
    (lambda s: s.update(optimizer=[]), r"'optimizer' must be an object of optimizer settings"),
    (
        lambda s: _opt(s).update(param_groups="x"),
        r"'optimizer\.param_groups' must be a list of parameter groups",
    ),
    (
        lambda s: _opt(s)["param_groups"][0].update(params="x"),
        r"'param_groups\[0\]\.params' must be a list of parameter ids",
    ),
    (
        lambda s: _opt(s)["param_groups"][0]["params"].__setitem__(0, "0"),
        r"param_groups\[0\]\.params must be integers",
    ),
    (
        lambda s: _opt(s).update(scalars=[]),
        r"'optimizer\.scalars' must be an object \{parameter id: \{\.\.\.\}\}",
    ),
    (
        lambda s: _opt(s).update(tensor_pids="x"),
        r"'optimizer\.tensor_pids' must be a list of parameter ids",
    ),
    (
        lambda s: _opt(s)["tensor_pids"].__setitem__(0, "0"),
        r"optimizer\.tensor_pids must be integers",
    ),
    (
        lambda s: _opt(s).update({"class": 5}),
        r"'optimizer\.class' must be a string: the optimizer's class name",
    ),
    (lambda s: s.update(rng=[]), r"'rng' must be an object of RNG states"),
    (
        lambda s: s["rng"].update(python="x"),
        r"'rng\.python' must be a list: Python's random\.getstate\(\)",
    ),
    (
        lambda s: s["rng"].update(numpy="x"),
        r"'rng\.numpy' must be a list: NumPy's random\.get_state\(\)",
    ),
]


@pytest.mark.parametrize("i", range(len(OUTLINE)))
def test_state_json_outline_names_the_field_and_what_it_must_be(ck, i):
    edit, phrase = OUTLINE[i]
    _edit_json(ck, "state.json", edit)
    _refused_untouched(ck, _fresh(), r"state\.json: " + phrase)


# ---- RNG states: tried on scratch generators first --------------------------------------------
def _py_mt(s):
    return s["rng"]["python"][1]


RNG_JSON = [
    (lambda s: _py_mt(s).__setitem__(0, 2**32), r"rng\.python is not \[version, 625 integers"),
    (lambda s: _py_mt(s).__setitem__(0, -1), r"rng\.python is not \[version, 625 integers"),
    (lambda s: _py_mt(s).__setitem__(0, 1.5), r"rng\.python is not \[version, 625 integers"),
    (lambda s: _py_mt(s).pop(), r"rng\.python is not \[version, 625 integers"),
    (lambda s: s["rng"]["python"].append(0), r"rng\.python is not \[version, 625 integers"),
    (lambda s: s["rng"]["numpy"][1].__setitem__(0, 2**32), r"rng\.numpy is not \[kind, 624 int"),
    (lambda s: s["rng"]["numpy"][1].__setitem__(0, 1.5), r"rng\.numpy is not \[kind, 624 int"),
    (lambda s: s["rng"]["numpy"][1].__setitem__(0, -1), r"rng\.numpy is not \[kind, 624 int"),
    (lambda s: s["rng"]["numpy"].__setitem__(2, 3.0), r"pos and has_gauss must be integers"),
    (lambda s: s["rng"]["numpy"].__setitem__(3, 1.0), r"pos and has_gauss must be integers"),
    # NumPy takes any pos, then reads past its 624 words (a segfault later)
    (lambda s: s["rng"]["numpy"].__setitem__(2, 100000), r"pos must be in 0..624"),
    # integers that NumPy itself refuses (too large for its C fields)
    (lambda s: s["rng"]["numpy"].__setitem__(2, 2**40), r"saved RNG state cannot be restored"),
    (lambda s: s["rng"]["numpy"].__setitem__(3, 2**70), r"saved RNG state cannot be restored"),
]


@pytest.mark.parametrize("i", range(len(RNG_JSON)))
def test_a_python_or_numpy_rng_state_that_would_not_restore_is_refused(ck, i):
    edit, phrase = RNG_JSON[i]
    _edit_json(ck, "state.json", edit)
    _refused_untouched(ck, _fresh(), r"state\.json: .*" + phrase)


@pytest.mark.parametrize(
    "edit, phrase",
    [
        (
            lambda t: t.update({"rng.torch": t["rng.torch"].long()}),
            r"state\.safetensors: the saved RNG state cannot be restored \(rng\.torch is not a b",
        ),
        (
            lambda t: t.update({"rng.cuda.0": torch.zeros(2, 8, dtype=torch.uint8)}),
            r"state\.safetensors: .*rng\.cuda\.0 is not a byte vector",
        ),
        (
            lambda t: t.update({"rng.cuda.0": torch.zeros(8, dtype=torch.int16)}),
            r"state\.safetensors: .*rng\.cuda\.0 is not a byte vector",
        ),
    ],
    ids=["torch-int64", "cuda-2d", "cuda-int16"],
)
def test_an_rng_tensor_that_is_not_a_byte_vector_is_refused(ck, edit, phrase):
    _edit_tensors(ck, "state.safetensors", edit)
    _refused_untouched(ck, _fresh(), phrase)


def test_zero_words_in_the_saved_rng_states_are_restored(ck):
    """0 is a valid word of a Mersenne Twister state (the bounds are 0 <= word < 2**32)."""

    def zeros(s):
        _py_mt(s)[5] = 0
        s["rng"]["numpy"][1][5] = 0

    _edit_json(ck, "state.json", zeros)
    load_training_state(ck, _fresh())
    assert random.getstate()[1][5] == 0 and np.random.get_state()[1][5] == 0


def test_cuda_rng_states_are_saved_only_once_cuda_is_initialized(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("read CUDA RNG"))
    _saved(tmp_path / "ck", steps=1)
    from safetensors.torch import load_file

    assert [k for k in load_file(tmp_path / "ck" / "state.safetensors") if "rng" in k] == [
        "rng.torch"
    ]


@pytest.mark.parametrize("available", [True, False])
def test_cuda_rng_states_are_restored_in_device_order_where_cuda_is(ck, monkeypatch, available):
    saved = [torch.full((8,), i, dtype=torch.uint8) for i in range(3)]
    _edit_tensors(ck, "state.safetensors", lambda t: t.update(
        {f"rng.cuda.{i}": s for i, s in reversed(list(enumerate(saved)))}
    ))  # fmt: skip
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: calls.append(states))
    load_training_state(ck, _fresh())
    if available:
        assert len(calls) == 1 and len(calls[0]) == 3
        assert all(torch.equal(a, b) for a, b in zip(calls[0], saved))
    else:
        assert calls == []


# ---- optimizer states that must resume exactly ---------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True),
        # AdamW.defaults holds decoupled_weight_decay, which AdamW() does not take: every AdamW
        # state used to be refused at resume
        lambda p: torch.optim.AdamW(p, lr=1e-2, amsgrad=True),
        lambda p: torch.optim.Adam(p, lr=1e-2, foreach=True),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    ],
    ids=["adam-amsgrad", "adamw-amsgrad", "adam-foreach", "sgd-momentum"],
)
def test_optimizer_state_resumes_exactly(tmp_path, make):
    opt = _saved(tmp_path / "ck", make)
    fresh = make(_model(1)[0].parameters())
    load_training_state(tmp_path / "ck", fresh)
    _assert_same_state(opt, fresh)


def test_amsgrad_state_without_its_max_exp_avg_sq_is_refused(tmp_path):
    make = lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True)  # noqa: E731
    _saved(tmp_path / "ck", make)
    _edit_tensors(tmp_path / "ck", "state.safetensors", lambda t: t.pop("optim.2.max_exp_avg_sq"))
    fresh = torch.optim.Adam(_model(1)[0].parameters(), lr=0.5, amsgrad=True)
    _refused_untouched(tmp_path / "ck", fresh, r"parameter 2 has exp_avg, exp_avg_sq, step, Adam")


def test_optimizer_tensors_stored_before_the_optim_ones_are_still_read(tmp_path):
    """safetensors stores 8-byte dtypes first: a float64 / int64 state tensor precedes optim.*"""
    extra = {"pos": torch.arange(3), "h": torch.randn(2, dtype=torch.float64)}
    opt = _saved(tmp_path / "ck", state_tensors=extra)
    fresh = _fresh()
    _, tensors = load_training_state(tmp_path / "ck", fresh)
    _assert_same_state(opt, fresh)
    assert torch.equal(tensors["pos"], extra["pos"]) and torch.equal(tensors["h"], extra["h"])


def _steps_as(value):
    """Every parameter's `step` as the number `value` in state.json (as older torch saved it)."""

    def edit_tensors(t):
        for k in [k for k in t if k.startswith("optim.") and k.endswith(".step")]:
            del t[k]

    def edit_json(s):
        pids = sorted({p for g in s["optimizer"]["param_groups"] for p in g["params"]})
        s["optimizer"]["scalars"] = {str(p): {"step": value} for p in pids}

    return edit_tensors, edit_json


def test_a_number_for_step_resumes(ck, adam_ck):
    edit_tensors, edit_json = _steps_as(0)
    _edit_tensors(ck, "state.safetensors", edit_tensors)
    _edit_json(ck, "state.json", edit_json)
    fresh = _fresh()
    load_training_state(ck, fresh)
    want, got = adam_ck[1].state_dict()["state"], fresh.state_dict()["state"]
    assert want.keys() == got.keys()
    for pid in want:
        assert float(got[pid]["step"]) == 0
        assert torch.equal(got[pid]["exp_avg"], want[pid]["exp_avg"])


def test_a_step_tensor_of_zero_resumes(ck):
    _edit_tensors(ck, "state.safetensors", lambda t: t.update({"optim.0.step": torch.tensor(0.0)}))
    fresh = _fresh()
    load_training_state(ck, fresh)
    assert float(fresh.state_dict()["state"][0]["step"]) == 0


def test_a_negative_number_for_step_is_refused(ck):
    edit_tensors, edit_json = _steps_as(-1)
    _edit_tensors(ck, "state.safetensors", edit_tensors)
    _edit_json(ck, "state.json", edit_json)
    _refused_untouched(ck, _fresh(), r"state\.json: optimizer state step of parameter 0 is -1,")


def _put(name, value):
    return lambda t: t.update({name: value})


TAMPERED = [
    (_put("optim.0.step", torch.tensor(2)), r"step of parameter 0 is \(\) torch\.int64"),
    (_put("optim.0.step", torch.tensor(-1.0)), r"step of parameter 0 is \(\) torch\.f"),
    (_put("optim.0.step", torch.ones(2)), r"step of parameter 0 is \(2,\) torch\.f"),
    (
        lambda t: t.update({"optim.0.exp_avg": t["optim.0.exp_avg"].reshape(-1)}),
        r"state\.json: optimizer state exp_avg of parameter 0 is \(\d+,\) torch\.float32, the p",
    ),
    (
        lambda t: t.update({"optim.0.exp_avg": t["optim.0.exp_avg"].double()}),
        r"state\.json: optimizer state exp_avg of parameter 0 is \(\d+, \d+\) torch\.float64",
    ),
    (
        lambda t: t.update({"optim.0.exp_avg.x": t["optim.0.exp_avg"].clone()}),
        r"state\.json: the optimizer state of parameter 0 has exp_avg, exp_avg\.x, exp_avg_sq, st",
    ),
    (lambda t: t.update({"optim.0": torch.zeros(1)}), r"tensor 'optim\.0' names no parameter"),
    (lambda t: t.update({"optim.": torch.zeros(1)}), r"tensor 'optim\.' names no parameter"),
    (
        lambda t: t.update({"optim.99.exp_avg": torch.zeros(1)}),
        r"tensor 'optim\.99\.exp_avg' names no parameter",
    ),
    (
        lambda t: t.update({"optim.x.exp_avg": torch.zeros(1)}),
        r"tensor 'optim\.x\.exp_avg' names no parameter",
    ),
]


@pytest.mark.parametrize("i", range(len(TAMPERED)))
def test_tampered_optimizer_tensors_are_refused(ck, i):
    edit, phrase = TAMPERED[i]
    _edit_tensors(ck, "state.safetensors", edit)
    _refused_untouched(ck, _fresh(), phrase)


def _group(s):
    return s["optimizer"]["param_groups"][0]


SETTINGS = [
    (lambda s: _group(s).update(amsgrad="yes"), r"amsgrad is 'yes' where Adam expects true/false"),
    (lambda s: _group(s).update(lr="x"), r"lr is 'x' where Adam expects a number"),
    (lambda s: _group(s).update(lr=True), r"lr is True where Adam expects a number"),
    (lambda s: _group(s).update(foreach="x"), r"foreach is 'x' where Adam expects null"),
    (lambda s: _group(s).update(foreach={}), r"foreach is \{\} where Adam expects null"),
    (lambda s: _group(s).update(lr=-1.0), r"settings Adam refuses \(Invalid learning rate: -1"),
    (lambda s: _group(s).update(betas=[0.9, 1.5]), r"settings Adam refuses \(Invalid beta"),
]


@pytest.mark.parametrize("i", range(len(SETTINGS)))
def test_group_settings_of_another_kind_or_out_of_range_are_refused(ck, i):
    edit, phrase = SETTINGS[i]
    _edit_json(ck, "state.json", edit)
    _refused_untouched(ck, _fresh(), r"state\.json: parameter group 0.*" + phrase)


def test_a_momentum_buffer_where_sgd_has_no_momentum_is_refused(tmp_path):
    _saved(tmp_path / "ck", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
    _edit_json(tmp_path / "ck", "state.json", lambda s: _group(s).update(momentum=0.0))
    fresh = torch.optim.SGD(_model(1)[0].parameters(), lr=0.5, momentum=0.9)
    _refused_untouched(
        tmp_path / "ck", fresh, r"parameter 0 has momentum_buffer, SGD keeps nothing"
    )


# ---- an optimizer lstmkit does not know: torch's own checks, and the state as it was ----------
class Dotted(torch.optim.Optimizer):
    """State keys with dots in them, a number in the state, and a __setstate__ that reads its
    parameters' tensors while it fills in a setting newer than some saves (as torch's ASGD reads
    p.device)."""

    def __init__(self, params, lr=0.1, newer=False):
        super().__init__(params, {"lr": lr, "newer": newer})

    def __setstate__(self, state):
        super().__setstate__(state)
        for g in self.param_groups:
            g.setdefault("newer", False)
            assert all(p.is_floating_point() for p in g["params"])

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                s = self.state[p]
                s["avg.grad"] = s.get("avg.grad", torch.zeros_like(p)) * 0.5 + p.grad
                s["n.steps"] = s.get("n.steps", 0) + 1
                p.add_(s["avg.grad"], alpha=-g["lr"])


def test_an_optimizer_of_ones_own_with_dotted_state_keys_resumes_exactly(tmp_path):
    opt = _saved(tmp_path / "ck", lambda p: Dotted(p, lr=0.05))
    fresh = Dotted(_model(1)[0].parameters(), lr=0.5)
    load_training_state(tmp_path / "ck", fresh)
    _assert_same_state(opt, fresh)
    assert fresh.state_dict()["state"][0]["n.steps"] == 2


def test_an_older_save_of_ones_own_optimizer_gets_its_newer_settings(tmp_path):
    _saved(tmp_path / "ck", lambda p: Dotted(p, lr=0.05))
    _edit_json(tmp_path / "ck", "state.json", lambda s: _group(s).pop("newer"))
    fresh = Dotted(_model(1)[0].parameters(), lr=0.5)
    load_training_state(tmp_path / "ck", fresh)
    assert fresh.param_groups[0]["lr"] == 0.05 and fresh.param_groups[0]["newer"] is False


# ---- the flat form itself ------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [lambda p: torch.optim.Adam(p, lr=1e-2), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)],
    ids=["adam", "sgd"],
)
def test_flat_form_through_json_gives_back_torchs_state_dict(tmp_path, make):
    """optimizer_to_flat, JSON, optimizer_from_flat: the optimizer's own state_dict() again
    (params a list of ids, betas a tuple, every tensor equal)."""
    opt = _saved(tmp_path / "ck", make)
    tensors, meta = optimizer_to_flat(opt)
    back = optimizer_from_flat(tensors, json.loads(json.dumps(meta)))
    want = opt.state_dict()
    assert back["param_groups"] == want["param_groups"]
    assert [type(g["params"]) for g in back["param_groups"]] == [list]
    assert back["state"].keys() == want["state"].keys()
    for pid, entry in want["state"].items():
        assert back["state"][pid].keys() == entry.keys()
        assert all(torch.equal(back["state"][pid][k], v) for k, v in entry.items())


def test_adamw_runs_resume_through_the_cli(tmp_path, capsys):
    """`lstmkit train --optimizer adamw` then --resume: the state loads and the run goes on."""
    from lm_helpers import tiny_corpus

    from lstmkit.cli.main import main

    train_file, valid_file = tiny_corpus(tmp_path)
    argv = ["train", "--train", str(train_file), "--valid", str(valid_file), "--out"]
    argv += [str(tmp_path / "R"), "--hidden-size", "8", "--emb-size", "8", "--layers", "1"]
    argv += ["--bptt", "8", "--batch-size", "4", "--optimizer", "adamw", "--no-progress"]
    assert main([*argv, "--max-steps", "3"]) == 0
    assert main([*argv, "--max-steps", "6", "--resume"]) == 0
    assert "done: 6 steps" in capsys.readouterr().out
