"""What conftest's hooks do under mutmut, to make mutation runs cheaper (docs/mutation.md).

They act only in a mutant's process under mutmut (cwd `mutants/`, mutmut's stats file there,
MUTANT_UNDER_TEST naming a mutant); everywhere else they do nothing. mutmut runs each mutant's
covering tests with `-x` and calls the mutant killed at the first failure, so what a killed
mutant costs is pytest's start, its collection and the tests before the one that fails:

0. **Imports.** The first call of a torch.library custom op (the fused engine's operators)
   imports torch._dynamo, paid again in every mutant's process, because mutmut's fork server
   only collects the tests: one intervention test of 7 ms took 2.70 s in a pytest run after
   the collection, in one process, without this import first, and 0.12 s with it (measured
   while a mutation run held both cores).
   So the fork server imports it here, once (an import only: it starts no thread and runs no
   op, which is what makes forking after it safe).
1. **Collection.** mutmut names every covering test on the command line: up to 1,650 node ids
   for the layers' checks. pytest resolves each id on its own, which cost about 1 s per mutant
   (measured: `--co` over those 1,649 ids, 0.96 s, against 0.15 s for one id). Here the ids
   become their 23 files, and the collected items are filtered back to the ids.
2. **Order.** The tests that killed an earlier mutant of the same function run first (mutants
   of one function tend to fall to the same test), then those that killed one in the same
   module, then the rest fastest first (by the durations mutmut measured); a killer slower than
   SLOW_KILLER_S keeps its place by duration. Each killed mutant
   appends its function and killing test to `mutation-killers.tsv`, which later mutants read.
3. **A record.** Each mutant's process appends one line to `mutation-times.jsonl` (mutant,
   tests selected and run, seconds, the failing test), which scripts/mutation.py summarises.
4. **Explained mutants are not run again.** A mutant explained in
   scripts/mutation_equivalents.toml survives by definition, and running every test that covers
   its function is what it costs: 215 explained survivors took 1,738 s of the 7,609 s inside
   pytest in session 6's run. scripts/mutation_reviewed.json holds a digest of each explained
   mutant's code (its function and the mutated copy, as mutmut wrote them) from the run whose
   report recorded the explanation. A mutant whose code still has that digest exits at once with
   mutmut's "skipped" code (34); one whose function changed is run (and its explanation listed
   to re-read). Like mutmut's own cache, this trusts an unchanged function to mutate alike.

LSTMKIT_MUTATION_PLAIN=1 turns 1 and 2 off (to measure what they save); LSTMKIT_MUTATION_ALL=1
turns 4 off (`python scripts/mutation.py --all`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

_STATS = Path("mutmut-stats.json")
KILLERS = Path("mutation-killers.tsv")
TIMES = Path("mutation-times.jsonl")
REVIEWED = Path("..") / "scripts" / "mutation_reviewed.json"  # mutants/ sits in the checkout
SKIPPED = 34  # mutmut's exit code for "skipped" (mutmut/stats.py)
# A killer slower than this keeps its place by duration. In session 6's run the fuzz test (1.0 s
# in mutmut's stats, a median 5.6 s in a mutant's process) killed an early mutant of
# nn.inputs.prepare, so it ran first for all the others: 40 of the run's last 60 mutants fell
# to it, and those 60 took 465 s.
SLOW_KILLER_S = 0.5


# Read once, when mutmut's fork server collects (in mutants/), so every mutant's process
# inherits them.
_IN_MUTANTS = Path.cwd().name == "mutants" and _STATS.is_file()
_DURATIONS: dict[str, float] = (
    json.loads(_STATS.read_text())["duration_by_test"] if _IN_MUTANTS else {}
)
if _IN_MUTANTS and Path("lstmkit").is_dir():  # mutmut's copy of the package (not a stand-in)
    import torch._dynamo  # noqa: F401 (0. above)
_PLAIN = os.environ.get("LSTMKIT_MUTATION_PLAIN") == "1"
_ALL = os.environ.get("LSTMKIT_MUTATION_ALL") == "1"
_run: dict = {}


def _module_file(root: Path, module: str) -> Path:
    path = root.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def digests(names: Iterable[str], root: Path) -> dict[str, str]:
    """{mutant: digest of its function's original and mutated code} as mutmut wrote them under
    root (mutants/). mutmut keeps the original as x_f__mutmut_orig and mutant n as x_f__mutmut_n;
    a mutant whose code is not there (its function gone or no longer mutated) is left out."""
    by_module: dict[str, list[str]] = {}
    for name in names:
        by_module.setdefault(_module(name), []).append(name)
    out = {}
    for module, members in by_module.items():
        path = _module_file(root, module)
        if not path.is_file():
            continue
        text = path.read_text()
        lines = text.splitlines(keepends=True)
        code = {
            node.name: "".join(lines[node.lineno - 1 : node.end_lineno])
            for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        }
        for name in members:
            short = name.rsplit(".", 1)[1]  # x_check_size__mutmut_3
            orig = short.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
            if short in code and orig in code:
                both = (code[orig] + "\0" + code[short]).encode()
                out[name] = hashlib.sha256(both).hexdigest()[:16]
    return out


def _unchanged_explained() -> frozenset[str]:
    """The explained mutants whose code is what it was when their explanation was recorded."""
    if not REVIEWED.is_file():
        return frozenset()
    try:
        reviewed = dict(json.loads(REVIEWED.read_text())["mutants"])
    except (ValueError, KeyError, TypeError):
        # hand-edited or cut short: run them all (pytest swallows output here; the report step,
        # scripts/mutation.py's record_reviewed, then stops and says what to do)
        return frozenset()
    now = digests(reviewed, Path.cwd())
    return frozenset(name for name, digest in now.items() if reviewed[name] == digest)


def _mutant() -> str | None:
    name = os.environ.get("MUTANT_UNDER_TEST", "")
    return name if _IN_MUTANTS and "__mutmut_" in name else None


def _function(mutant: str) -> str:
    return mutant.rsplit("__mutmut_", 1)[0]  # lstmkit.nn.checks.x_check_size


def _module(mutant: str) -> str:
    return _function(mutant).rsplit(".", 1)[0]  # lstmkit.nn.checks


# worked out once, in the fork server (11 s over session 6's mutants/: it parses the mutated files)
_SKIP = _unchanged_explained() if _IN_MUTANTS and not _ALL else frozenset()


def configure(config) -> None:
    mutant = _mutant()
    if mutant is None:
        return
    _run.update(mutant=mutant, start=time.perf_counter(), ran=0, failed=None, selected=None)
    if mutant in _SKIP:  # (4. above) no session starts, so the record is written here
        import pytest

        _run.update(selected=0, explained=True)
        _record(SKIPPED)
        _run.clear()
        pytest.exit("explained in scripts/mutation_equivalents.toml, code unchanged", SKIPPED)
    if _PLAIN:
        return
    ids = [a for a in config.args if "::" in a]
    if len(ids) < 2:
        return
    _run["wanted"] = set(ids)
    _run["whole"] = {a for a in config.args if "::" not in a}
    config.args[:] = list(dict.fromkeys(a.split("::", 1)[0] for a in config.args))


def _killers(mutant: str) -> tuple[dict[str, int], dict[str, int]]:
    """How often each test killed a mutant of this function, and of this module."""
    same_function: dict[str, int] = {}
    same_module: dict[str, int] = {}
    if not KILLERS.is_file():
        return same_function, same_module
    function, module = _function(mutant), _module(mutant)
    for line in KILLERS.read_text().splitlines():
        fn, _, test = line.partition("\t")
        if fn == function:
            same_function[test] = same_function.get(test, 0) + 1
        if fn.rsplit(".", 1)[0] == module:
            same_module[test] = same_module.get(test, 0) + 1
    return same_function, same_module


def modify_items(config, items: list) -> None:
    """Called from conftest's pytest_collection_modifyitems: filter and order a mutant's tests."""
    mutant = _mutant()
    if mutant is None:
        return
    if "wanted" in _run:
        whole = _run["whole"]
        keep, drop = [], []
        for item in items:
            wanted = item.nodeid in _run["wanted"] or item.nodeid.split("::", 1)[0] in whole
            (keep if wanted else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
        items[:] = keep
    if _PLAIN:
        items.sort(key=lambda item: _DURATIONS.get(item.nodeid, 0.0))
    else:
        function, module = _killers(mutant)

        def key(item):
            seconds = _DURATIONS.get(item.nodeid, 0.0)
            if seconds > SLOW_KILLER_S:  # a slow killer keeps its place (see SLOW_KILLER_S)
                return (0, 0, seconds)
            return (-function.get(item.nodeid, 0), -module.get(item.nodeid, 0), seconds)

        items.sort(key=key)
    _run["selected"] = len(items)


def logreport(report) -> None:
    if not _run or report.when != "call" and not report.failed:
        return
    if report.when == "call":
        _run["ran"] += 1
    if report.failed and _run["failed"] is None:
        _run["failed"] = report.nodeid


def sessionfinish(exitstatus: int) -> None:
    if _run:
        _record(exitstatus)


def _record(exitstatus: int) -> None:
    mutant, failed = _run["mutant"], _run["failed"]
    record = {
        "mutant": mutant,
        "selected": _run["selected"],
        "ran": _run["ran"],
        "seconds": round(time.perf_counter() - _run["start"], 3),
        "failed": failed,
        "exit": int(exitstatus),
    }
    if _run.get("explained"):
        record["explained"] = True
    # one short write each, in append mode: the two workers' lines do not interleave
    with TIMES.open("a") as f:
        f.write(json.dumps(record) + "\n")
    if failed is not None:
        with KILLERS.open("a") as f:
            f.write(f"{_function(mutant)}\t{failed}\n")
