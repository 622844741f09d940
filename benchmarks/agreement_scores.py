"""The scoring half of benchmarks/agreement_lm.py: every kept checkpoint on Marvin & Linzen 2018
and on Linzen et al. 2016, then the table (README) and the curve of accuracy against training
time. Run through agreement_lm.py (`python benchmarks/agreement_lm.py score`)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import REPO_ROOT
from tqdm import tqdm

# The agreement rows of Marvin & Linzen's table, and their LSTM (2 x 650, 80M tokens of
# Wikipedia) as recorded, approximately, in ../shared/data/marvin_linzen_2018/SOURCE.txt
# (not checked against the paper here).
PAPER_LSTM = {
    "simple": 0.94,
    "in a sentential complement": 0.99,
    "short VP coordination": 0.90,
    "long VP coordination": 0.61,
    "across a prepositional phrase": 0.57,
    "across a subject relative clause": 0.56,
    "across an object relative clause": 0.50,
    "in an object relative clause": 0.84,
}
CURVE_EPOCHS = (1, 2, 4, 8)  # the others are kept, not scored (scoring time)


def _run(*args: str) -> None:
    cmd = [sys.executable, "-m", "lstmkit.cli.main", *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO_ROOT)


def score_checkpoint(ckpt: Path, data: Path, per_test: int | None, limit: int | None) -> dict:
    """Marvin & Linzen rows and Linzen accuracy by attractor count for one checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "suite.json"
        flags = ["--per-test", str(per_test)] if per_test else []
        _run("agreement", "suite", str(ckpt), "--data", str(data / "marvin_linzen_2018"),
             "--json", str(suite), *flags)  # fmt: skip
        rows = json.loads(suite.read_text())["rows"]
        linzen = {}
        for k in (1, 2, 3, 4):
            out = Path(tmp) / f"linzen{k}.json"
            flags = ["--limit", str(limit)] if limit else []
            items = data / "linzen_rnn_agr_simple" / f"numpred.test.{k}"
            _run("agreement", "eval", str(ckpt), "--format", "linzen", "--json", str(out),
                 "--data", str(items), *flags)  # fmt: skip
            report = json.loads(out.read_text())
            linzen[str(k)] = {
                key: report[key]
                for key in ("n", "accuracy", "unscorable", "oov_share", "majority_baseline")
            }
    return {"marvin_linzen": rows, "linzen": linzen, "per_test": per_test, "limit": limit}


def score_model(args, model: str) -> list[dict]:
    """Every kept checkpoint of one model that the curve or the table needs, scored."""
    data, runs = Path(args.data), Path(args.runs)
    timeline = json.loads((runs / model / "timeline.json").read_text())
    last = timeline[-1]["epoch"]
    wanted = [e for e in timeline if e["epoch"] in CURVE_EPOCHS or e["epoch"] == last]
    points = []
    for entry in tqdm(wanted, desc=f"scoring {model}", unit="checkpoint"):
        final = entry["epoch"] == last
        if args.quick:
            per_test, limit = 20, 50
        elif final:  # the table: every Linzen item, M&L a spread subset of each file
            per_test, limit = args.final_per_test, None
        else:
            per_test, limit = args.per_test, args.limit
        ckpt = runs / model / f"epoch-{entry['epoch']}"
        points.append({**entry, **score_checkpoint(ckpt, data, per_test, limit)})
    return points


def score_all(args) -> dict:
    """Both models at once (one core each: every scoring command runs with one thread)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {m: pool.submit(score_model, args, m) for m in ("lstm", "rnn")}
        models = {m: f.result() for m, f in futures.items()}
    record = {"models": models, "paper_lstm": PAPER_LSTM}
    lines = markdown(record)
    print("\n".join(lines))
    Path(args.md).write_text("\n".join(lines) + "\n")
    return record


def _agreement_rows(point: dict) -> dict[str, dict]:
    return {r["phenomenon"]: r for r in point["marvin_linzen"] if r["section"] == "agreement"}


def _acc(row: dict | None) -> str:
    if row is None or row["accuracy"] is None or not row["n"]:
        return "-"
    return f"{row['accuracy']:.2f}"


def markdown(record: dict) -> list[str]:
    lstm, rnn = record["models"]["lstm"][-1], record["models"]["rnn"][-1]
    valid = {m: pts[-1]["log"].get("valid") for m, pts in record["models"].items()}

    def ppl(v):
        return "-" if not v else f"{v.get('ppl', float('nan')):.0f}"

    lines = [
        "# LSTM against RNN language models on agreement (PTB, 2 x 200, same budget)",
        "",
        f"Both trained {lstm['epoch']} epochs on PTB (LSTM {lstm['train_seconds'] / 60:.0f} min, "
        f"RNN {rnn['train_seconds'] / 60:.0f} min of training on one core each, both at once on "
        f"2 cores); validation perplexity LSTM {ppl(valid['lstm'])}, RNN {ppl(valid['rnn'])}. "
        "Accuracy over the scorable pairs (a pair whose two sentences are the same once PTB's "
        "vocabulary maps unknown words to <unk> is unscorable, and counted apart).",
        "",
        "## Marvin & Linzen 2018, subject-verb agreement",
        "",
        "| phenomenon | LSTM (here) | RNN (here) | scored pairs | unscorable | paper's LSTM |",
        "|---|---|---|---|---|---|",
    ]
    a, b = _agreement_rows(lstm), _agreement_rows(rnn)
    for name, row in a.items():
        paper = PAPER_LSTM.get(name)
        lines.append(
            f"| {name} | {_acc(row)} | {_acc(b.get(name))} | {row['n']:,} | "
            f"{row['unscorable']:,} ({row['unscorable_share']:.0%}) | "
            f"{'-' if paper is None else f'{paper:.2f}'} |"
        )
    lines += [
        "",
        f"(M&L: at most {lstm['per_test'] or 'all'} entries per test file, spread over the "
        "file; the paper's LSTM is 2 x 650 trained on 80M words of Wikipedia, approximate "
        "figures from the data's SOURCE.txt.)",
        "",
        "## Linzen et al. 2016, number prediction by attractors (all items)",
        "",
        "| attractors | LSTM | RNN | items | majority baseline |",
        "|---|---|---|---|---|",
    ]
    for k in ("1", "2", "3", "4"):
        x, y = lstm["linzen"][k], rnn["linzen"][k]
        lines.append(
            f"| {k} | {x['accuracy']:.2f} | {y['accuracy']:.2f} | {x['n']:,} | "
            f"{x['majority_baseline']:.2f} |"
        )
    lines += [
        "",
        "## Accuracy against training time",
        "",
        "| model | epoch | minutes | valid ppl | simple | across a subject RC | across an object RC"
        " | Linzen 1 attractor | Linzen 4 attractors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, points in record["models"].items():
        for p in points:
            rows = _agreement_rows(p)
            cells = [
                model, p["epoch"], f"{p['train_seconds'] / 60:.0f}", ppl(p["log"].get("valid")),
                _acc(rows.get("simple")), _acc(rows.get("across a subject relative clause")),
                _acc(rows.get("across an object relative clause")),
                f"{p['linzen']['1']['accuracy']:.2f}", f"{p['linzen']['4']['accuracy']:.2f}",
            ]  # fmt: skip
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines
