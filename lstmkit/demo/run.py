"""The demo's run: generate, train both kinds of model from several seeds, score, ablate, probe,
write the report (see lstmkit.demo)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lstmkit.agreement.grammar import AgreementGrammar
from lstmkit.agreement.readers import from_generated
from lstmkit.agreement.score import score_prefix_items
from lstmkit.agreement.train import SentenceLMConfig, build_vocab, train_sentence_lm
from lstmkit.demo.causal import causal_section
from lstmkit.demo.config import DemoConfig
from lstmkit.demo.sections import (
    accuracy_section,
    cells_section,
    eval_every,
    first_step,
    long_range,
)
from lstmkit.inspect.report import Report
from lstmkit.training.checkpoint import save_checkpoint

CELLS = ("rnn", "lstm")  # the two kinds of model the demo compares


def _train_and_score(cfg: DemoConfig, sentences, vocab, items):
    """Train an RNN and an LSTM from each seed and score them. Returns (models, reports,
    histories), each {cell: [one per seed]}."""
    models, reports, histories = ({c: [] for c in CELLS} for _ in range(3))
    for k in range(cfg.seeds):
        for cell in CELLS:
            lm_cfg = SentenceLMConfig(
                cell=cell,
                emb_size=cfg.emb_size,
                hidden_size=cfg.hidden_size,
                steps=cfg.steps,
                lr=cfg.lr,
                max_seconds=cfg.max_seconds,
                seed=cfg.seed + k,
            )

            def during(m):  # agreement accuracy by distance, tracked while training
                r = score_prefix_items(m, vocab, items)
                return {
                    "accuracy": r.accuracy,
                    "by_distance": {d: v["accuracy"] for d, v in r.by_distance.items()},
                }

            model, hist = train_sentence_lm(
                sentences,
                vocab,
                lm_cfg,
                progress=cfg.progress,
                desc=f"training {cell.upper():4} seed {cfg.seed + k}",
                evaluate=during,
                eval_every=eval_every(cfg),
            )
            models[cell].append(model)
            histories[cell].append(hist)
            reports[cell].append(score_prefix_items(model, vocab, items))
    return models, reports, histories


def _best_seeds(reports) -> dict[str, int]:
    """Each kind's most accurate model (the first on ties): the one inspected, ablated and
    saved. A model at chance carries no number to look for or to ablate."""
    return {c: max(range(len(rs)), key=lambda k: (rs[k].accuracy, -k)) for c, rs in reports.items()}


def run_demo(cfg: DemoConfig) -> dict:
    """Run the whole demo (see the module docstring); returns the summary."""
    if cfg.seeds < 1:
        raise ValueError(f"seeds must be >= 1 (models of each kind), got {cfg.seeds}")
    t0 = time.perf_counter()
    out = Path(cfg.out)
    train = AgreementGrammar(cfg.seed).corpus(cfg.train_sentences, cfg.max_train_distance)
    distances = list(range(cfg.max_test_distance + 1))
    test = AgreementGrammar(cfg.seed + 1).test_set(cfg.per_distance, distances)
    probe_set = AgreementGrammar(cfg.seed + 2).test_set(
        max(1, cfg.inspect_sentences // (2 * len(distances))) * 2, distances
    )  # fresh sentences for the probes: not those the cells are ranked on
    sentences = [s.tokens for s in train]
    vocab = build_vocab(sentences)
    items = from_generated(test)

    all_models, reports, histories = _train_and_score(cfg, sentences, vocab, items)
    best = _best_seeds(reports)
    models = {c: all_models[c][k] for c, k in best.items()}
    for c, model in models.items():
        save_checkpoint(
            out / "models" / c,
            model,
            model.config,
            vocab,
            data={"level": "word", "source": "lstmkit agreement grammar"},
            train=histories[c][best[c]]["config"],
        )
    rep = Report(out, "lstmkit demo: carrying a subject's number across a gap")
    rep.paragraph(
        f"{cfg.train_sentences:,} generated training sentences with 0-{cfg.max_train_distance} "
        f"words between subject and verb; {len(test):,} test sentences, {cfg.per_distance} at "
        f"each distance 0-{cfg.max_test_distance}. Both kinds of model: embedding "
        f"{cfg.emb_size}, one recurrent layer of {cfg.hidden_size} units, Adam lr {cfg.lr}, "
        f"batch 32, the same budget of {cfg.steps} steps (or {cfg.max_seconds:g} s), "
        f"{cfg.seeds} seed(s) each. A test sentence is right when the model prefers the "
        "correct verb form to the wrong one after the prefix."
    )
    rep.raw("<p>Example: <code>" + " ".join(test[-1].tokens) + "</code></p>")
    cut = [
        f"{c.upper()} seed {cfg.seed + k} ({h['steps']} steps)"
        for c, hs in histories.items()
        for k, h in enumerate(hs)
        if h["steps"] < cfg.steps
    ]
    if cut:
        rep.paragraph(
            f"Note: {', '.join(cut)} stopped at the {cfg.max_seconds:g} s cap (--max-seconds) "
            f"before the {cfg.steps} steps of the budget, so not every model below had the "
            "same budget. Run again with a larger --max-seconds."
        )
    accuracy_section(rep, cfg, reports, histories, out)
    rep.paragraph(
        "The sections below look inside one model of each kind: its most accurate seed ("
        + ", ".join(f"{c.upper()} seed {cfg.seed + k}" for c, k in best.items())
        + "), saved in models/."
    )
    cells = cells_section(rep, cfg, models, vocab, test, out)
    ranked = {c: (state, rk.cells) for c, (state, rk) in cells.items()}
    causal = causal_section(rep, cfg, models, vocab, items, probe_set, ranked, out)
    seconds = time.perf_counter() - t0
    span = long_range(cfg)
    summary = {
        "config": asdict(cfg),
        "seconds": seconds,
        "vocab_size": len(vocab),
        "accuracy": {c: float(np.mean([r.accuracy for r in rs])) for c, rs in reports.items()},
        "by_distance": {c: _mean_by_distance(rs) for c, rs in reports.items()},
        "per_seed": {
            c: [
                {"seed": cfg.seed + k, "accuracy": r.accuracy, **r.to_dict()}
                for k, r in enumerate(rs)
            ]
            for c, rs in reports.items()
        },
        "by_attractors": {c: rs[0].to_dict()["by_attractors"] for c, rs in reports.items()},
        "inspected_seed": {c: cfg.seed + k for c, k in best.items()},
        "number_cells": {c: {"state": n, **rk.to_dict()} for c, (n, rk) in cells.items()},
        "during_training": {c: hs[0]["evals"] for c, hs in histories.items()},
        "during_training_per_seed": {c: [h["evals"] for h in hs] for c, hs in histories.items()},
        "steps_to_long_distance": {
            c: [first_step(h["evals"], span, 0.95) for h in hs] for c, hs in histories.items()
        },
        "long_distances": list(span),
        "training": {
            c: [{k: h[k] for k in ("steps", "seconds")} | {"final_loss": h["loss"][-1]} for h in hs]
            for c, hs in histories.items()
        },
        **causal,
    }
    rep.paragraph(f"Total time {seconds:.0f} s.")
    rep.write()
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _mean_by_distance(reports) -> dict[str, float]:
    """Accuracy at each distance, mean over the seeds' models."""
    return {
        str(d): float(np.mean([r.by_distance[d]["accuracy"] for r in reports]))
        for d in reports[0].by_distance
    }


def format_summary(summary: dict) -> str:
    """The terminal table: accuracy by distance (mean over seeds) at the budget, how soon each
    seed's model carries the number far, the number cells and what zeroing them does."""
    seeds = len(summary["per_seed"]["rnn"])
    bd = summary["by_distance"]
    lines = [f"{'distance':>8} {'RNN':>8} {'LSTM':>8}   (mean over {seeds} seed(s))"]
    for d in bd["rnn"]:
        lines.append(f"{d:>8} {bd['rnn'][d]:>8.3f} {bd['lstm'][d]:>8.3f}")
    acc = summary["accuracy"]
    lines.append(f"{'all':>8} {acc['rnn']:>8.3f} {acc['lstm']:>8.3f}")
    lines.append("")
    a, b = summary["long_distances"]
    for c, steps in summary["steps_to_long_distance"].items():
        budget = summary["training"][c][0]["steps"]
        when = ", ".join(str(s) if s is not None else f"not in {budget}" for s in steps)
        lines.append(
            f"{c.upper():4} steps until mean accuracy >= 0.95 at distances {a}-{b}: {when}"
        )
    lines.append("")
    for c, d in summary["number_cells"].items():
        lines.append(
            f"{c.upper():4} best number cells ({d['state']}): {d['cells'][:5]}; best single "
            f"cell {d['test_accuracy'][0]:.3f}, all cells {d['probe_test_accuracy']:.3f},"
            f" majority {d['majority_accuracy']:.3f} (held-out sentences)"
        )
    for c, s in summary["ablation"].items():
        parts = [f"intact {s['intact']['long']:.2f}"]
        for k, r in s.items():
            if k != "intact":
                rand = float(np.mean(r["random"]["long"]))
                parts.append(f"best {k} zeroed {r['ranked']['long']:.2f} (random {rand:.2f})")
        lines.append(f"{c.upper():4} long-distance accuracy: " + ", ".join(parts))
    return "\n".join(lines)
