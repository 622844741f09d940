"""Mutation testing of lstmkit's core, scorers and checkpoints: run mutmut, write the report.

    python scripts/mutation.py              # mutmut run (2 workers) + report
    python scripts/mutation.py --report     # report only, from the last run's mutants/
    python scripts/mutation.py --only "lstmkit.cells.*"   # a part (mutmut's name patterns)
    python scripts/mutation.py --recheck    # after writing tests: run the survivors again only
    python scripts/mutation.py --all        # also the explained mutants whose code is unchanged

Which files are mutated and which tests judge them is [tool.mutmut] in pyproject.toml. mutmut
changes one thing at a time (an operator, a constant, a keyword argument), runs the tests that
cover the changed function, and calls the mutant killed when one fails. A mutant that survives is
either a gap in the tests or *equivalent*: a change no test can see because the program means the
same (a default argument passed explicitly with its default value, say). Each equivalent survivor
is explained in scripts/mutation_equivalents.toml; every other survivor is a test to write.
An explained mutant is not run again while its code is what it was when the explanation was
recorded (a digest per mutant in scripts/mutation_reviewed.json, tests/mutation_hooks.py): it
survives by definition. One whose function changed is run, and the report lists its explanation
to re-read; `--confirm-explanations` records the new code once they are read.

The score is (killed + killed outside) / (mutants - equivalent - message text), per module and
overall (message text: a mutant that changes only an error message's wording, marked in the
equivalents file; killed outside: killed by a test the mutation run leaves out, checked by hand);
the strict score counts the message-text ones as survivors. A timeout or a crash counts as killed
(the tests noticed). The report goes to docs/mutation-report.md (a table and every
surviving mutant's diff) and benchmarks/results/mutation.json (machine, versions, commit, the
command and the counts).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENTS = ROOT / "scripts" / "mutation_equivalents.toml"
REVIEWED = ROOT / "scripts" / "mutation_reviewed.json"
REPORT = ROOT / "docs" / "mutation-report.md"
RESULTS = ROOT / "benchmarks" / "results" / "mutation.json"
TARGET = 0.90  # issue 14: at least 90% of non-equivalent mutants killed

# mutmut's exit codes (mutmut/stats.py), folded into what the report counts
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped"}
STATUS.update({36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout"})
STATUS.update({37: "caught by type check", None: "not checked"})
# a mutant's process killed by a signal: SIGSEGV and SIGABRT (the compiled loops reading or
# writing past a buffer a mutant sized wrong, or torch's checks aborting), SIGKILL
STATUS.update({-11: "crashed", -6: "crashed", -9: "crashed"})


def run_mutmut(only: str | None, workers: int, everything: bool = False) -> float:
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(workers)]
    if only:
        cmd.append(only)
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    env = dict(_env(), LSTMKIT_MUTATION_ALL="1") if everything else _env()
    if subprocess.run(cmd, cwd=ROOT, env=env).returncode != 0:
        raise SystemExit(
            "error: mutmut stopped (its output is above). If it says the tests failed, the "
            "selected tests must pass on the unmutated code first: run them with pytest"
        )
    return time.time() - t0


def _env() -> dict:
    # one torch thread per worker: two workers on two cores, and results that do not depend on
    # the thread count
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def forget_survivors(mutants: Path, only: str | None, codes_to_forget: tuple = (0,)) -> int:
    """Mark surviving mutants unchecked, so that the next mutmut run tries them again (mutmut
    keeps every result it has; new tests are only given to unchecked mutants). With 34 in
    codes_to_forget, the explained mutants that were skipped too (--all)."""
    import fnmatch

    n = 0
    for meta in (mutants / "lstmkit").rglob("*.py.meta"):
        data = json.loads(meta.read_text())
        codes = data["exit_code_by_key"]
        for name, code in codes.items():
            if code in codes_to_forget and (only is None or fnmatch.fnmatch(name, only)):
                codes[name] = None
                n += 1
        meta.write_text(json.dumps(data, indent=4))
    return n


def load_results(mutants: Path) -> dict[str, dict[str, str]]:
    """{module path: {mutant name: status}} from mutmut's .meta files."""
    out: dict[str, dict[str, str]] = {}
    for meta in sorted((mutants / "lstmkit").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            module = str(meta.relative_to(mutants)).removesuffix(".meta")
            out[module] = {k: STATUS.get(v, "suspicious") for k, v in codes.items()}
    return out


def diff_of(name: str, path: str) -> str:
    """The changed lines of one mutant (mutmut's own diff, read in this process: calling
    `mutmut show` for each of hundreds of survivors would take minutes)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    lines = get_diff_for_mutant(name, path=path).splitlines()
    return "\n".join(
        line
        for line in lines
        if line.startswith(("+", "-", "@@")) and not line.startswith(("+++", "---"))
    )


def is_message(reason: str) -> bool:
    """An entry of the equivalents file for a mutant that changes only a message's wording."""
    return reason.startswith("message: ")


def is_outside(reason: str) -> bool:
    """An entry for a mutant that a test outside the mutation selection kills (a torch.compile
    test: dynamo cannot trace mutmut's trampolines), checked by hand: counted as killed."""
    return reason.startswith("killed outside: ")


def _kind(reason: str) -> str:
    return "message" if is_message(reason) else "outside" if is_outside(reason) else "equivalent"


def _explained(status: str, name: str, equivalents: dict[str, str]) -> bool:
    """A survivor with an explanation, run this time or skipped as unchanged."""
    return status in ("survived", "skipped") and name in equivalents


def summarise(results: dict, equivalents: dict[str, str]) -> tuple[list[dict], dict]:
    rows, total = [], Counter()
    for module, statuses in results.items():
        c = Counter(statuses.values())
        explained = [k for k, s in statuses.items() if _explained(s, k, equivalents)]
        msg = sum(1 for k in explained if is_message(equivalents[k]))
        outside = sum(1 for k in explained if is_outside(equivalents[k]))
        c["equivalent"], c["message text"] = len(explained) - msg - outside, msg
        c["killed outside"] = outside
        c["not rerun"] = sum(1 for k in explained if statuses[k] == "skipped")
        c["survived"] -= len(explained) - c["not rerun"]
        c["skipped"] -= c["not rerun"]
        c["mutants"] = len(statuses)
        if c["mutants"] > c["not checked"]:  # (a partial run: --only)
            rows.append({"module": module, **c})
        total.update(c)
    for row in [*rows, total]:
        checked = row["mutants"] - row.get("not checked", 0)
        judged = checked - row.get("equivalent", 0) - row.get("skipped", 0)
        caught = row.get("killed", 0) + row.get("killed outside", 0) + row.get("timeout", 0)
        caught += row.get("caught by type check", 0)
        caught += row.get("crashed", 0)  # the tests noticed: the process died
        msg = row.get("message text", 0)
        row["score"] = caught / (judged - msg) if judged - msg else 1.0
        row["strict score"] = caught / judged if judged else 1.0  # message mutants as survivors
    return rows, dict(total)


def costs(mutants: Path, results: dict) -> list[dict]:
    """Where the run's time went, per module, from the record tests/mutation_hooks.py keeps
    (mutants/mutation-times.jsonl: seconds inside pytest per mutant; a recheck's line replaces
    the first run's). Empty for runs made before that record existed. A line cut short (a
    worker killed while it wrote) is skipped: that mutant counts as not timed."""
    times = mutants / "mutation-times.jsonl"
    if not times.is_file():
        return []
    last = {}
    for line in times.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        last[record["mutant"]] = record
    rows = []
    for module, statuses in results.items():
        records = [last[name] for name in statuses if name in last]
        killed = sorted(r["seconds"] for r in records if r["failed"])
        kept = [r["seconds"] for r in records if not r["failed"]]
        if not records:
            continue
        rows.append(
            {
                "module": module,
                "timed": len(records),
                "killed s": round(sum(killed), 2),
                "survived s": round(sum(kept), 2),
                "median killed s": killed[len(killed) // 2] if killed else 0.0,
                "first test kills": sum(1 for r in records if r["failed"] and r["ran"] <= 1),
            }
        )
    return rows


def record_reviewed(
    results: dict,
    equivalents: dict[str, str],
    confirm: bool,
    mutants: Path = ROOT / "mutants",
    reviewed: Path = REVIEWED,
) -> list[str]:
    """Write scripts/mutation_reviewed.json: the digest of each explained survivor's code, which
    lets the next run skip it while that code is unchanged (tests/mutation_hooks.py). A mutant
    whose function changed since its explanation was recorded keeps its old digest (so it runs
    again next time) and is returned, to be re-read, unless confirm says it was."""
    sys.path.insert(0, str(ROOT / "tests"))
    from mutation_hooks import digests

    try:
        previous = json.loads(reviewed.read_text())["mutants"] if reviewed.exists() else {}
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(
            f"error: {reviewed} is not the digest file scripts/mutation.py writes ({e!r}). "
            "Restore it (git checkout -- scripts/mutation_reviewed.json), or delete it to record "
            "every explanation afresh against this run's code"
        ) from None
    names = [n for st in results.values() for n, s in st.items() if _explained(s, n, equivalents)]
    now = digests(names, mutants)
    changed = sorted(n for n in now if n in previous and previous[n] != now[n] and not confirm)
    kept = {n: previous[n] if n in changed else now[n] for n in sorted(now)}
    note = "written by scripts/mutation.py: the code each explanation was recorded against"
    part = reviewed.with_name(reviewed.name + ".part")  # a kill mid-write leaves the old file
    part.write_text(json.dumps({"note": note, "mutants": kept}, indent=0) + "\n")
    part.replace(reviewed)
    return changed


def stale_explanations(results: dict, equivalents: dict[str, str]) -> list[tuple[str, str]]:
    """(name, status) of each explanation whose mutant was caught, or does not exist."""
    known = {name: status for statuses in results.values() for name, status in statuses.items()}
    still = ("survived", "skipped", "not checked")
    out = [(name, known.get(name, "no such mutant")) for name in equivalents]
    return [(name, status) for name, status in out if status not in still]


def write_report(
    results: dict, equivalents: dict[str, str], meta: dict, reread: list[str] = ()
) -> None:
    rows, total = summarise(results, equivalents)
    cost_rows = costs(ROOT / "mutants", results)
    cols = ["mutants", "not checked", "killed", "killed outside", "timeout", "crashed"]
    cols += ["survived", "equivalent", "message text", "not rerun", "no tests"]
    lines = [
        "# Mutation testing report",
        "",
        f"Made by `{meta['command']}` at commit `{meta['commit']}` on {meta['machine']}"
        f" ({meta['versions']}): "
        + (
            f"the full run took {meta['minutes']:.0f} min wall"
            if not total.get("not checked")
            else f"the run was stopped after {meta['minutes']:.0f} min wall, with "
            f"{total['mutants'] - total['not checked']:,} of {total['mutants']:,} mutants "
            "checked (the table's 'not checked')"
        )
        + (
            ", the recheck of its survivors"
            + (" and explained mutants (--all)" if meta.get("recheck_all") else "")
            + f" {meta['recheck_minutes']:.0f} min"
            + (f" at commit `{meta['recheck_commit']}`" if meta.get("recheck_commit") else "")
            if meta.get("recheck_minutes")
            else ""
        )
        + ".",
        "How to read and rerun it: [docs/mutation.md](mutation.md).",
        "",
        "| module | " + " | ".join(cols) + " | score | strict |",
        "|---|" + "---|" * (len(cols) + 2),
    ]
    for row in rows + [dict(total, module="**all**")]:
        cells = " | ".join(str(row.get(c, 0)) for c in cols)
        scores = f"{100 * row['score']:.1f}% | {100 * row['strict score']:.1f}%"
        lines.append(f"| {row['module']} | {cells} | {scores} |")
    lines += [
        "",
        f"Target: {100 * TARGET:.0f}% of non-equivalent mutants killed. score: killed / "
        "(checked - equivalent - message text); strict: the message-text mutants counted as "
        "survivors (mutants that change only an error message's wording, see "
        "scripts/mutation_equivalents.toml). not rerun: explained mutants (of the equivalent, "
        "message text and killed outside columns) skipped because their code is unchanged since "
        "the explanation was recorded (`--all` runs them).",
        "",
    ]
    if reread:
        lines += [
            "## Explanations to re-read",
            "",
            "These mutants' functions changed since their explanation was recorded, so the "
            "explanation may no longer hold (mutmut numbers a function's mutants anew when it "
            "changes). Read each against the diff below, fix or remove it in "
            "scripts/mutation_equivalents.toml, then `python scripts/mutation.py --report "
            "--confirm-explanations`.",
            "",
        ]
        for name in reread:
            module = next(m for m, st in results.items() if name in st)
            lines += [f"### `{name}`", "", equivalents[name], "", "```diff"]
            lines += [diff_of(name, module), "```", ""]
    if cost_rows:
        cost_cols = ["timed", "killed s", "survived s", "median killed s", "first test kills"]
        lines += [
            "## Where the time went",
            "",
            "Seconds inside pytest per mutant, summed over both workers (tests/mutation_hooks.py "
            "records them); wall time is about half the sum plus mutmut's own work. "
            "'first test kills': killed by the first test run (the killers of the same "
            "function are run first). A rechecked mutant's line is the recheck's (after "
            "`--all`, 'survived s' is what the explained mutants cost when run).",
            "",
            "| module | " + " | ".join(cost_cols) + " |",
            "|---|" + "---|" * len(cost_cols),
        ]
        for row in cost_rows:
            cells = " | ".join(str(row[c]) for c in cost_cols)
            lines.append(f"| {row['module']} | {cells} |")
        lines.append("")
    sections = [
        ("Equivalent mutants (survive by design)", "equivalent"),
        ("Message-text mutants (only an error message's wording)", "message"),
        ("Killed by tests outside the mutation selection (checked by hand)", "outside"),
    ]
    for title, wanted in sections:
        lines += [f"## {title}", ""]
        for statuses in results.values():
            for name, status in statuses.items():
                reason = equivalents.get(name)
                if _explained(status, name, equivalents) and _kind(reason) == wanted:
                    text = reason.removeprefix("message: ").removeprefix("killed outside: ")
                    lines.append(f"- `{name}`: {text}")
        lines.append("")
    stale = [f"- `{name}`: {status}" for name, status in stale_explanations(results, equivalents)]
    if stale:
        lines += [
            "## Explanations to remove",
            "",
            "Entries of scripts/mutation_equivalents.toml whose mutant was caught this time or "
            "does not exist (its function changed or is gone): a new test kills it, or the "
            "name now means another change.",
            "",
            *stale,
            "",
        ]
    lines += ["## Surviving mutants (gaps in the tests)", ""]
    for module, statuses in results.items():
        for name, status in statuses.items():
            if status in ("survived", "no tests") and name not in equivalents:
                diff = diff_of(name, module)
                lines += [f"### `{name}` ({status})", "", "```diff", diff, "```", ""]
    REPORT.write_text("\n".join(lines) + "\n")
    record = {**meta, "modules": rows, "total": total, "cost": cost_rows}
    RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    print(f"score {100 * total['score']:.1f}% over {total['mutants']} mutants; wrote {REPORT}")


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--report", action="store_true", help="only write the report from mutants/")
    p.add_argument("--only", help="mutmut name pattern, e.g. 'lstmkit.cells.*' (default: all)")
    p.add_argument("--workers", type=int, default=2, help="parallel mutants (default: 2)")
    p.add_argument(
        "--recheck",
        action="store_true",
        help="run the last run's surviving mutants again (after new tests), then report",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="also run the explained mutants whose code is unchanged (skipped by default)",
    )
    p.add_argument(
        "--confirm-explanations",
        action="store_true",
        help="the report's 'Explanations to re-read' were read: record their new code",
    )
    # for a run made by `python -m mutmut run` directly (or stopped early): its facts by hand
    p.add_argument("--minutes", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--commit", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.confirm_explanations and not args.report:
        p.error("--confirm-explanations goes with --report: read the report's list first")
    os.chdir(ROOT)  # mutmut reads pyproject.toml and mutants/ relative to the working directory
    # --all after a run: its survivors and its skipped explained mutants again, as a recheck
    args.recheck = args.recheck or args.all and (ROOT / "mutants" / "mutmut-stats.json").is_file()
    if args.recheck:
        codes = (0, 34) if args.all else (0,)
        n = forget_survivors(ROOT / "mutants", args.only, codes)
        print(f"{n} surviving mutants to run again")
    seconds = 0.0 if args.report else run_mutmut(args.only, args.workers, args.all)
    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    from common import environment  # benchmarks/common.py: machine, versions, commit

    env = environment()
    equivalents = tomllib.loads(EQUIVALENTS.read_text()) if EQUIVALENTS.exists() else {}
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    full_run = not (args.report or args.recheck)
    meta = {
        "command": previous.get("command", "python scripts/mutation.py")
        if not full_run
        else "python scripts/mutation.py"
        + (f" --only '{args.only}'" if args.only else "")
        + (" --all" if args.all else ""),
        "commit": env.get("git_commit"),
        "machine": f"{env.get('cpu')}, {env.get('cpu_count', '?')} CPUs",
        "versions": f"python {env.get('python')}, torch {env.get('torch')}",
        "minutes": seconds / 60 if full_run else previous.get("minutes", 0.0),
        "recheck_minutes": seconds / 60 if args.recheck else previous.get("recheck_minutes"),
        "recheck_all": args.all if args.recheck else previous.get("recheck_all", False),
        "recheck_commit": env.get("git_commit") if args.recheck else previous.get("recheck_commit"),
    }
    if not full_run and previous.get("commit"):
        meta["commit"] = previous["commit"]  # the code that was mutated, not today's HEAD
    if args.minutes is not None:
        meta["minutes"] = args.minutes
    if args.commit is not None:
        meta["commit"] = args.commit
    results = load_results(ROOT / "mutants")
    if not results:
        print("no mutation results in mutants/: run without --report first", file=sys.stderr)
        return 1
    equivalents = {k: str(v) for k, v in equivalents.items()}
    reread = record_reviewed(results, equivalents, args.confirm_explanations)
    write_report(results, equivalents, meta, reread)
    return 0


if __name__ == "__main__":
    sys.exit(main())
