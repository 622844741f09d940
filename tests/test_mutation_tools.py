"""The mutation run's own tools: the pytest hooks that pick and order a mutant's tests
(tests/mutation_hooks.py) and the report's cost table (scripts/mutation.py).

A hook that dropped a wanted test would turn killed mutants into survivors; one that kept
an unwanted test would make runs slower and kill mutants with tests that do not cover them.
So each hook runs here in a real pytest, in a directory laid out as mutmut lays out mutants/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HOOKS = Path(__file__).with_name("mutation_hooks.py")
ROOT = Path(__file__).resolve().parents[1]

CONFTEST = f"""
import sys
sys.path.insert(0, {str(HOOKS.parent)!r})
import mutation_hooks

def pytest_configure(config):
    mutation_hooks.configure(config)

def pytest_collection_modifyitems(config, items):
    mutation_hooks.modify_items(config, items)

def pytest_runtest_logreport(report):
    mutation_hooks.logreport(report)

def pytest_sessionfinish(session, exitstatus):
    mutation_hooks.sessionfinish(exitstatus)
"""

TESTS = """
import pytest

def test_fast():
    pass

def test_slow():
    pass

def test_breaks():
    raise AssertionError("the mutant is seen")

@pytest.mark.parametrize("n", [1, 2, 3])
def test_grid(n):
    assert n != 3
"""

FAST, SLOW, BREAKS = (f"tests/test_a.py::test_{n}" for n in ("fast", "slow", "breaks"))
GRID = [f"tests/test_a.py::test_grid[{n}]" for n in (1, 2, 3)]
MUTANT = "pkg.mod.x_f__mutmut_3"


def _mutants(tmp_path: Path) -> Path:
    """A mutants/ directory as mutmut leaves it: its stats file (durations) and a tests dir."""
    d = tmp_path / "mutants"
    (d / "tests").mkdir(parents=True)
    (d / "tests" / "conftest.py").write_text(CONFTEST)
    (d / "tests" / "test_a.py").write_text(TESTS)
    durations = {FAST: 0.01, SLOW: 5.0, BREAKS: 0.4, GRID[0]: 0.2, GRID[1]: 0.3, GRID[2]: 9.0}
    (d / "mutmut-stats.json").write_text(json.dumps({"duration_by_test": durations}))
    return d


def _pytest(
    cwd: Path, *ids: str, mutant: str | None = MUTANT, plain: bool = False, everything=False
):
    drop = ("MUTANT_UNDER_TEST", "PYTEST_ADDOPTS", "LSTMKIT_MUTATION_ALL", "LSTMKIT_MUTATION_PLAIN")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if mutant:
        env["MUTANT_UNDER_TEST"] = mutant
    if plain:
        env["LSTMKIT_MUTATION_PLAIN"] = "1"
    if everything:
        env["LSTMKIT_MUTATION_ALL"] = "1"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir=.", "-v", *ids]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _ran(out: str) -> list[str]:
    return [
        line.split(" ")[0] for line in out.splitlines() if " PASSED" in line or " FAILED" in line
    ]


def _records(d: Path) -> list[dict]:
    return [json.loads(x) for x in (d / "mutation-times.jsonl").read_text().splitlines()]


def test_a_mutant_runs_exactly_its_tests_fastest_first(tmp_path):
    d = _mutants(tmp_path)
    r = _pytest(d, SLOW, GRID[1], FAST, GRID[0])
    assert r.returncode == 0, r.stdout + r.stderr
    assert _ran(r.stdout) == [FAST, GRID[0], GRID[1], SLOW]  # by mutmut's durations
    assert "2 deselected" in r.stdout  # test_breaks and test_grid[3] were not asked for
    (record,) = _records(d)
    assert record == {
        **record,
        "mutant": MUTANT,
        "selected": 4,
        "ran": 4,
        "failed": None,
        "exit": 0,
    }
    assert record["seconds"] > 0
    assert not (d / "mutation-killers.tsv").exists()


def test_the_killing_test_is_recorded_and_runs_first_for_the_next_mutant(tmp_path):
    d = _mutants(tmp_path)
    r = _pytest(d, "-x", SLOW, BREAKS, FAST)
    assert r.returncode == 1
    assert _ran(r.stdout) == [FAST, BREAKS]  # -x: test_slow never runs
    assert (d / "mutation-killers.tsv").read_text() == f"pkg.mod.x_f\t{BREAKS}\n"
    assert _records(d)[0]["failed"] == BREAKS and _records(d)[0]["ran"] == 2

    # the next mutant of the same function: the killer first, before faster tests
    r = _pytest(d, "-x", SLOW, BREAKS, FAST, mutant="pkg.mod.x_f__mutmut_4")
    assert _ran(r.stdout) == [BREAKS]
    # a mutant of another function in the same module: the module's killers come first too
    r = _pytest(d, "-x", FAST, BREAKS, mutant="pkg.mod.x_g__mutmut_1")
    assert _ran(r.stdout) == [BREAKS]
    # another module's killers do not count
    r = _pytest(d, "-x", SLOW, FAST, BREAKS, mutant="pkg.other.x_f__mutmut_1")
    assert _ran(r.stdout) == [FAST, BREAKS]
    killers = (d / "mutation-killers.tsv").read_text().splitlines()
    assert [k.split("\t")[0] for k in killers] == ["pkg.mod.x_f"] * 2 + [
        "pkg.mod.x_g",
        "pkg.other.x_f",
    ]


def test_a_slow_killer_keeps_its_place_by_duration(tmp_path):
    """A killer slower than SLOW_KILLER_S (0.5 s) is not moved ahead of faster tests; a fast
    killer is."""
    d = _mutants(tmp_path)
    (d / "mutation-killers.tsv").write_text(f"pkg.mod.x_f\t{SLOW}\npkg.mod.x_f\t{BREAKS}\n")
    r = _pytest(d, SLOW, GRID[1], FAST, GRID[0], BREAKS)
    assert _ran(r.stdout) == [BREAKS, FAST, GRID[0], GRID[1], SLOW]


def test_plain_mode_keeps_pytest_s_own_collection_and_the_duration_order(tmp_path):
    d = _mutants(tmp_path)
    (d / "mutation-killers.tsv").write_text(f"pkg.mod.x_f\t{SLOW}\n")
    r = _pytest(d, SLOW, FAST, GRID[2], plain=True)
    assert _ran(r.stdout) == [FAST, SLOW, GRID[2]]  # no killer first
    assert "deselected" not in r.stdout
    assert _records(d)[0]["failed"] == GRID[2]


def test_a_whole_file_on_the_command_line_keeps_all_its_tests(tmp_path):
    d = _mutants(tmp_path)
    r = _pytest(d, "tests/test_a.py", FAST)
    assert sorted(_ran(r.stdout)) == sorted([FAST, SLOW, BREAKS, *GRID])


def test_outside_a_mutation_run_the_hooks_do_nothing(tmp_path):
    d = _mutants(tmp_path)
    r = _pytest(d, SLOW, FAST, mutant=None)  # a plain pytest in the same directory
    assert _ran(r.stdout) == [SLOW, FAST]  # the command line's order, no record
    assert not (d / "mutation-times.jsonl").exists()
    other = tmp_path / "elsewhere"  # a mutant name set, but not in a mutants/ directory
    (d).rename(other)
    r = _pytest(other, SLOW, FAST)
    assert _ran(r.stdout) == [SLOW, FAST]
    assert not (other / "mutation-times.jsonl").exists()


# mutmut's copy of a module: the original function and two mutants of it
MODULE = """
def x_f__mutmut_orig(a):
    return a + 1

def x_f__mutmut_3(a):
    return a - 1

def x_f__mutmut_4(a):
    return a + 2
"""


def _hooks_and_script():
    sys.path[:0] = [str(HOOKS.parent), str(ROOT / "scripts")]
    try:
        import mutation
        import mutation_hooks
    finally:
        del sys.path[:2]
    return mutation_hooks, mutation


def test_an_explained_mutant_whose_code_is_unchanged_is_skipped_and_a_changed_one_runs(tmp_path):
    hooks, _ = _hooks_and_script()
    d = _mutants(tmp_path)
    (d / "pkg").mkdir()
    (d / "pkg" / "mod.py").write_text(MODULE)
    digest = hooks.digests([MUTANT], d)[MUTANT]
    # the digest covers the original function and the mutant, nothing else
    assert hooks.digests(["pkg.mod.x_f__mutmut_4", "pkg.mod.x_g__mutmut_1"], d).keys() == {
        "pkg.mod.x_f__mutmut_4"
    }
    (tmp_path / "scripts").mkdir()
    reviewed = tmp_path / "scripts" / "mutation_reviewed.json"
    reviewed.write_text(json.dumps({"mutants": {MUTANT: digest}}))

    r = _pytest(d, FAST, BREAKS)
    assert r.returncode == 34, r.stdout + r.stderr  # mutmut's "skipped"
    assert _ran(r.stdout) == []
    (record,) = _records(d)
    assert record | {"seconds": 0} == {
        "mutant": MUTANT,
        "selected": 0,
        "ran": 0,
        "seconds": 0,
        "failed": None,
        "exit": 34,
        "explained": True,
    }
    # --all runs it; so does a mutant of the same function that has no explanation
    assert _ran(_pytest(d, FAST, everything=True).stdout) == [FAST]
    assert _ran(_pytest(d, FAST, mutant="pkg.mod.x_f__mutmut_4").stdout) == [FAST]
    # a digest file cut short by a kill mid-write: nothing is skipped, and the run goes on
    reviewed.write_text(json.dumps({"mutants": {MUTANT: digest}})[:20])
    r = _pytest(d, FAST)
    assert r.returncode == 0 and _ran(r.stdout) == [FAST], r.stdout + r.stderr
    reviewed.write_text(json.dumps({"mutants": {MUTANT: digest}}))
    # the function changed since the explanation was recorded: it runs (and is killed)
    (d / "pkg" / "mod.py").write_text(MODULE.replace("a + 1", "a + 1.0"))
    r = _pytest(d, "-x", FAST, BREAKS)
    assert r.returncode == 1 and _ran(r.stdout) == [FAST, BREAKS]


def test_a_changed_explanation_is_listed_to_reread_until_confirmed(tmp_path):
    hooks, mutation = _hooks_and_script()
    d = tmp_path / "mutants"
    (d / "pkg").mkdir(parents=True)
    (d / "pkg" / "mod.py").write_text(MODULE)
    reviewed = tmp_path / "reviewed.json"
    results = {"pkg/mod.py": {MUTANT: "survived", "pkg.mod.x_f__mutmut_4": "killed"}}
    why = {MUTANT: "a - 1 for a + 1: the same here"}

    assert mutation.record_reviewed(results, why, False, d, reviewed) == []  # first record
    first = json.loads(reviewed.read_text())["mutants"]
    assert first == hooks.digests([MUTANT], d)  # the killed mutant is not recorded
    (d / "pkg" / "mod.py").write_text(MODULE.replace("a + 1", "a + 1.0"))
    results["pkg/mod.py"][MUTANT] = "skipped"
    assert mutation.record_reviewed(results, why, False, d, reviewed) == [MUTANT]
    assert json.loads(reviewed.read_text())["mutants"] == first  # so it still runs next time
    assert mutation.record_reviewed(results, why, True, d, reviewed) == []
    assert json.loads(reviewed.read_text())["mutants"] == hooks.digests([MUTANT], d) != first
    reviewed.write_text("{")  # not ours: refused with what to do, not a traceback
    with pytest.raises(SystemExit, match="git checkout"):
        mutation.record_reviewed(results, why, False, d, reviewed)
    assert reviewed.read_text() == "{"


def test_confirming_explanations_needs_the_report_flag():
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "mutation.py"), "--confirm-explanations"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "goes with --report" in r.stderr


def test_the_report_sums_each_module_s_costs_and_a_recheck_replaces_a_line(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import mutation
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    lines = [
        {"mutant": "lstmkit.a.x_f__mutmut_1", "ran": 1, "seconds": 0.5, "failed": "t1"},
        {"mutant": "lstmkit.a.x_f__mutmut_2", "ran": 7, "seconds": 2.0, "failed": "t2"},
        {"mutant": "lstmkit.a.x_f__mutmut_3", "ran": 40, "seconds": 30.0, "failed": None},
        {"mutant": "lstmkit.a.x_f__mutmut_3", "ran": 41, "seconds": 31.0, "failed": None},
        {"mutant": "lstmkit.b.x_g__mutmut_1", "ran": 1, "seconds": 0.25, "failed": "t9"},
    ]
    text = "".join(json.dumps(x) + "\n" for x in lines)
    text += '{"mutant": "lstmkit.b.x_g__mutmut_1", "ran": 9, "sec'  # a worker killed mid-write
    (tmp_path / "mutation-times.jsonl").write_text(text)
    results = {
        "lstmkit/a.py": {f"lstmkit.a.x_f__mutmut_{i}": "killed" for i in (1, 2, 3, 4)},
        "lstmkit/b.py": {"lstmkit.b.x_g__mutmut_1": "killed"},
        "lstmkit/c.py": {"lstmkit.c.x_h__mutmut_1": "not checked"},
    }
    rows = mutation.costs(tmp_path, results)
    assert rows == [
        {
            "module": "lstmkit/a.py",
            "timed": 3,
            "killed s": 2.5,
            "survived s": 31.0,  # the recheck's line, not the first run's
            "median killed s": 2.0,
            "first test kills": 1,
        },
        {
            "module": "lstmkit/b.py",
            "timed": 1,
            "killed s": 0.25,
            "survived s": 0.0,
            "median killed s": 0.25,
            "first test kills": 1,
        },
    ]
    assert mutation.costs(tmp_path / "none", results) == []


def test_the_score_counts_each_kind_of_explained_survivor_its_own_way():
    """Of 10 mutants: 5 killed, 1 timeout, 4 survivors, of which one is equivalent, one only
    changes a message, one is killed by a test outside the selection and one is a gap. Score:
    (5 + 1 + 1 outside) / (10 - 1 equivalent - 1 message) = 7/8; strict: 7/9."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import mutation
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    statuses = {f"m{i}": "killed" for i in range(5)} | {"t": "timeout"}
    statuses |= {"eq": "survived", "msg": "survived", "out": "survived", "gap": "survived"}
    reasons = {"eq": "x * 1.0", "msg": "message: a word", "out": "killed outside: the test"}
    rows, total = mutation.summarise({"lstmkit/a.py": statuses}, reasons)
    (row,) = rows
    assert (row["killed"], row["timeout"], row["survived"]) == (5, 1, 1)
    assert (row["equivalent"], row["message text"], row["killed outside"]) == (1, 1, 1)
    assert row["score"] == 7 / 8 and row["strict score"] == 7 / 9
    assert total["score"] == 7 / 8
    # the same explained mutants skipped as unchanged (not rerun) count the same way
    skipped = statuses | {"eq": "skipped", "msg": "skipped", "out": "skipped"}
    (again,), _ = mutation.summarise({"lstmkit/a.py": skipped}, reasons)
    assert again["not rerun"] == 3 and again["skipped"] == 0
    assert {k: again[k] for k in row} == row | {"not rerun": 3}
    # an explanation whose mutant is now caught, or gone, is listed for removal
    reasons |= {"m0": "stale", "t": "stale", "gone": "its function changed"}
    assert mutation.stale_explanations({"lstmkit/a.py": skipped}, reasons) == [
        ("m0", "killed"),
        ("t", "timeout"),
        ("gone", "no such mutant"),
    ]
