"""The demo's run: generate, train both models, score, write the report (see lstmkit.demo)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from lstmkit.agreement.grammar import AgreementGrammar
from lstmkit.agreement.readers import from_generated
from lstmkit.agreement.score import score_prefix_items
from lstmkit.agreement.train import SentenceLMConfig, build_vocab, train_sentence_lm
from lstmkit.demo.config import DemoConfig
from lstmkit.demo.sections import accuracy_section, cells_section, first_step, long_range
from lstmkit.inspect.report import Report
from lstmkit.training.checkpoint import save_checkpoint


def _train_and_score(cfg: DemoConfig, sentences, vocab, items, out: Path):
    """Train the RNN and the LSTM, score both, save both as checkpoints."""
    models, reports, histories = {}, {}, {}
    for cell in ("rnn", "lstm"):
        lm_cfg = SentenceLMConfig(
            cell=cell,
            emb_size=cfg.emb_size,
            hidden_size=cfg.hidden_size,
            steps=cfg.steps,
            lr=cfg.lr,
            max_seconds=cfg.max_seconds,
            seed=cfg.seed,
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
            desc=f"training {cell.upper():4}",
            evaluate=during,
            eval_every=max(1, cfg.steps // 12),
        )
        models[cell], histories[cell] = model, hist
        reports[cell] = score_prefix_items(model, vocab, items)
        save_checkpoint(
            out / "models" / cell,
            model,
            model.config,
            vocab,
            data={"level": "word", "source": "lstmkit agreement grammar"},
            train=hist["config"],
        )

    return models, reports, histories


def run_demo(cfg: DemoConfig) -> dict:
    """Run the whole demo (see the module docstring); returns the summary."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    train = AgreementGrammar(cfg.seed).corpus(cfg.train_sentences, cfg.max_train_distance)
    distances = list(range(cfg.max_test_distance + 1))
    test = AgreementGrammar(cfg.seed + 1).test_set(cfg.per_distance, distances)
    sentences = [s.tokens for s in train]
    vocab = build_vocab(sentences)
    items = from_generated(test)

    models, reports, histories = _train_and_score(cfg, sentences, vocab, items, out)
    rep = Report(out, "lstmkit demo: carrying a subject's number across a gap")
    rep.paragraph(
        f"{cfg.train_sentences:,} generated training sentences with 0-{cfg.max_train_distance} "
        f"words between subject and verb; {len(test):,} test sentences, {cfg.per_distance} at "
        f"each distance 0-{cfg.max_test_distance}. Both models: embedding {cfg.emb_size}, one "
        f"recurrent layer of {cfg.hidden_size} units, Adam lr {cfg.lr}, batch 32, "
        f"{cfg.steps} steps (or {cfg.max_seconds:g} s). A test sentence is right when the "
        "model prefers the correct verb form to the wrong one after the prefix."
    )
    rep.raw("<p>Example: <code>" + " ".join(test[-1].tokens) + "</code></p>")
    accuracy_section(rep, cfg, reports, histories, out)
    cells = cells_section(rep, cfg, models, vocab, test, out)
    seconds = time.perf_counter() - t0
    summary = {
        "config": asdict(cfg),
        "seconds": seconds,
        "vocab_size": len(vocab),
        "accuracy": {c: r.accuracy for c, r in reports.items()},
        "by_distance": {c: r.to_dict()["by_distance"] for c, r in reports.items()},
        "by_attractors": {c: r.to_dict()["by_attractors"] for c, r in reports.items()},
        "number_cells": {c: {"state": n, **rk.to_dict()} for c, (n, rk) in cells.items()},
        "during_training": {c: h["evals"] for c, h in histories.items()},
        "steps_to_long_distance": {
            c: first_step(h["evals"], long_range(cfg), 0.95) for c, h in histories.items()
        },
        "long_distances": list(long_range(cfg)),
        "training": {
            c: {k: h[k] for k in ("steps", "seconds")} | {"final_loss": h["loss"][-1]}
            for c, h in histories.items()
        },
    }
    rep.paragraph(f"Total time {seconds:.0f} s.")
    rep.write()
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def format_summary(summary: dict) -> str:
    """The terminal table: accuracy by distance half-way through training and at the end."""
    ev = summary["during_training"]
    mid = {c: e[(len(e) - 1) // 2] for c, e in ev.items()}  # the evaluation half-way
    end = {c: e[-1] for c, e in ev.items()}
    head = [f"RNN@{mid['rnn']['step']}", f"LSTM@{mid['lstm']['step']}"]
    head += [f"RNN@{end['rnn']['step']}", f"LSTM@{end['lstm']['step']}"]
    lines = [f"{'distance':>8} " + " ".join(f"{h:>10}" for h in head)]
    for d in end["rnn"]["by_distance"]:
        vals = [mid["rnn"], mid["lstm"], end["rnn"], end["lstm"]]
        lines.append(f"{d:>8} " + " ".join(f"{v['by_distance'][d]:>10.3f}" for v in vals))
    vals = [mid["rnn"], mid["lstm"], end["rnn"], end["lstm"]]
    lines.append(f"{'all':>8} " + " ".join(f"{v['accuracy']:>10.3f}" for v in vals))
    lines.append("(MODEL@STEP: accuracy after that many training steps of 32 sentences)")
    lines.append("")
    a, b = summary["long_distances"]
    for c, step in summary["steps_to_long_distance"].items():
        steps = summary["training"][c]["steps"]
        when = f"after {step} steps" if step is not None else f"not within {steps} steps"
        lines.append(f"{c.upper():4} mean accuracy >= 0.95 at distances {a}-{b}: {when}")
    lines.append("")
    for c, d in summary["number_cells"].items():
        lines.append(
            f"{c.upper():4} best number cells ({d['state']}): {d['cells']}; best single "
            f"cell {d['test_accuracy'][0]:.3f}, all cells {d['probe_test_accuracy']:.3f},"
            f" majority {d['majority_accuracy']:.3f} (held-out sentences)"
        )
    return "\n".join(lines)
