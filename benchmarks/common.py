"""What the benchmark scripts share: the record of the machine and the code, and interleaved
timing. Scripts run as `python benchmarks/NAME.py`, so this file is imported as `common`."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def environment() -> dict:
    """Machine, versions, commit and the command line, for every results file."""

    def git(*args):
        try:
            return subprocess.run(
                ["git", *args], capture_output=True, text=True, cwd=REPO_ROOT, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError) as err:
            return f"unavailable ({err})"

    cpu = "unknown"
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lstmkit": _lstmkit_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "git_commit": git("rev-parse", "HEAD"),
        # code changes only: results files written by an earlier benchmark are not the code
        "git_dirty": bool(
            git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results")
        ),
        "load_average_at_start": os.getloadavg(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }


def parser(doc: str, name: str, repeats: int) -> argparse.ArgumentParser:
    """The flags every timing benchmark takes: --threads, --repeats, --quick, --out, --md (the
    results go to benchmarks/results/NAME.json and .md)."""
    p = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Example: python benchmarks/{name}.py --threads 1",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--repeats", type=int, default=repeats, help="timed rounds per case (median)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repeats (smoke test)")
    p.add_argument("--out", default=f"benchmarks/results/{name}.json")
    p.add_argument("--md", default=f"benchmarks/results/{name}.md")
    return p


def add_training_flags(p: argparse.ArgumentParser, name: str, seed: int = 1) -> None:
    """The flags every training benchmark takes: --seed, --threads, --out (the JSON results,
    rewritten as the run goes) and --save (the final model's checkpoint directory)."""
    p.add_argument("--seed", type=int, default=seed, help="random seed")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0 = torch's default). On a CPU shared with other jobs, 1 "
        "thread avoids oversubscription, which cost 3-4x here",
    )
    p.add_argument(
        "--out",
        default=str(REPO_ROOT / f"benchmarks/results/{name}.json"),
        help="JSON results file (rewritten as the run goes)",
    )
    p.add_argument(
        "--save",
        default=str(REPO_ROOT / f"runs/{name}"),
        help="checkpoint directory for the final model ('' = do not save)",
    )


def _lstmkit_version() -> str:
    import lstmkit

    return lstmkit.__version__


def interleaved(
    cases: dict[str, Callable[[], object]],
    repeats: int,
    calls: int | dict[str, int],
    warmup: int = 2,
) -> dict[str, dict[str, float]]:
    """Median and minimum seconds per call of each case. Every repeat times every case once
    (`calls` calls in a row: one number, or one per case), in a rotating order, so load from
    other jobs hits all alike."""
    names = list(cases)
    per = calls if isinstance(calls, dict) else dict.fromkeys(names, calls)
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            fn = cases[n]
            start = time.perf_counter()
            for _ in range(per[n]):
                fn()
            times[n].append((time.perf_counter() - start) / per[n])
    return {n: {"median": statistics.median(v), "min": min(v)} for n, v in times.items()}


def provenance(env: dict) -> str:
    """The first sentence of a results table: the command, the machine, the code."""
    dirty = " (dirty)" if env["git_dirty"] else ""
    return (
        f"`{env['command']}` on {env['cpu']} ({env['cpu_count']} cores), torch {env['torch']}, "
        f"{env['torch_threads']} thread(s), commit {env['git_commit'][:7]}{dirty}, "
        f"{env['date_utc']}."
    )


def write(path: str | os.PathLike, record: dict, md: str | os.PathLike | None = None,
          lines: list[str] | None = None) -> None:  # fmt: skip
    """The JSON record, and the markdown table (printed too) when given."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=2) + "\n")
    if md is not None:
        print("\n".join(lines))
        Path(md).write_text("\n".join(lines) + "\n")
