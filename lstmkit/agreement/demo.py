"""The demo: does a plain RNN carry a subject's number across a gap, and does an LSTM?

    run_demo(DemoConfig(out="lstmkit-demo"))

1. Generate an agreement corpus with the built-in grammar (no download): training sentences
   with 0..max_train_distance words between subject and verb, and a test set with `per_distance`
   sentences at every distance 0..max_test_distance (longer than any seen in training).
2. Train a plain (tanh) RNN and an LSTM language model of the same size on it.
3. Score both, every steps/12 steps while training and at the end: a test sentence is right
   when the model gives the correct verb form a higher probability than the wrong one after
   the prefix. Accuracy by distance and by attractors, and how many steps each model needs
   before it is right at long distances.
4. Read the LSTM's cell states (and the RNN's hidden states) at the steps between subject and
   verb, and rank the cells by how well each alone predicts the subject's number on held-out
   sentences; plot the best cell over time.
5. Write the report folder (index.html, PNGs, figures.json, summary.json, the interactive
   inspect.html, and both models as lstmkit checkpoints) and return the summary.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lstmkit.agreement.grammar import AgreementGrammar
from lstmkit.agreement.readers import from_generated
from lstmkit.agreement.score import score_prefix_items
from lstmkit.agreement.train import SentenceLMConfig, build_vocab, train_sentence_lm
from lstmkit.inspect.cells import predictive_cells
from lstmkit.inspect.html import write_page
from lstmkit.inspect.plots import plot_heatmaps, plot_lines, plot_saturation, plot_text_cell
from lstmkit.inspect.report import Report
from lstmkit.inspect.states import StateSet, collect_states
from lstmkit.training.checkpoint import save_checkpoint


@dataclass
class DemoConfig:
    out: str = "lstmkit-demo"
    train_sentences: int = 20_000
    max_train_distance: int = 12  # words between subject and verb in training sentences
    max_test_distance: int = 18
    per_distance: int = 100  # test sentences per distance
    emb_size: int = 32
    hidden_size: int = 64
    steps: int = 3000  # optimiser steps per model (batch 32)
    lr: float = 3e-3
    max_seconds: float = 150.0  # per model: stop training early after this
    inspect_sentences: int = 300
    seed: int = 0
    progress: bool = True


def _number_data(states, sentences):
    """Rows: the steps from the subject up to the word before the verb; label: plural."""
    name = states.default_state()
    xs, ys, groups, offsets = [], [], [], []
    for k, s in enumerate(sentences):
        vals = states.values[name][k]
        for t in range(s.subject_index, s.verb_index):
            xs.append(vals[t])
            ys.append(int(s.plural))
            groups.append(k)
            offsets.append(t - s.subject_index)
    return name, np.array(xs), np.array(ys), np.array(groups), np.array(offsets)


def _cell_course(states, name, cell, sentences, min_distance):
    """Mean value of one cell at each step after the subject, singular vs plural subjects."""
    course = {"singular": {}, "plural": {}}
    for k, s in enumerate(sentences):
        if s.distance < min_distance:
            continue
        vals = states.values[name][k][:, cell]
        key = "plural" if s.plural else "singular"
        for t in range(s.subject_index, min(len(vals), s.verb_index + 1)):
            course[key].setdefault(t - s.subject_index, []).append(float(vals[t]))
    return {k: (sorted(v), [float(np.mean(v[o])) for o in sorted(v)]) for k, v in course.items()}


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


def _long_range(cfg: DemoConfig) -> tuple[int, int]:
    D = cfg.max_test_distance
    return (min(D, max(3, D // 2 + 1)), D)


def _first_step(evals: list[dict], span: tuple[int, int], level: float) -> int | None:
    """The first evaluated step at which mean accuracy over the distances in span >= level."""
    for e in evals:
        acc = np.mean([e["by_distance"][d] for d in range(span[0], span[1] + 1)])
        if acc >= level:
            return int(e["step"])
    return None


def _during_training(histories, lo: tuple[int, int], hi: tuple[int, int]):
    """Series for the plot: mean accuracy over distances lo and hi against training step."""
    series = {}
    for c, h in histories.items():
        for a, b in (lo, hi):
            ys = [
                float(np.mean([e["by_distance"][d] for d in range(a, b + 1)])) for e in h["evals"]
            ]
            series[f"{c.upper()}, distance {a}-{b}"] = ([e["step"] for e in h["evals"]], ys)
    return series


def _accuracy_section(rep, cfg: DemoConfig, reports, histories, out: Path) -> None:
    """Accuracy by distance and by attractors, the table, the training curves."""
    rep.heading("Agreement accuracy")
    acc = {
        c: ([float(d) for d in r.by_distance], [v["accuracy"] for v in r.by_distance.values()])
        for c, r in reports.items()
    }
    fig = plot_lines(
        {c.upper(): acc[c] for c in acc},
        out / "accuracy_by_distance.png",
        "agreement accuracy against distance (words between subject and verb); "
        f"training distances 0-{cfg.max_train_distance}",
        "distance (words)",
        "accuracy",
        hline=0.5,
        hline_label="chance",
    )
    rep.figure("accuracy_by_distance", fig, "Accuracy against distance, RNN and LSTM.")
    att = {
        c.upper(): (
            [float(a) for a in r.by_attractors],
            [v["accuracy"] for v in r.by_attractors.values()],
        )
        for c, r in reports.items()
    }
    fig = plot_lines(
        att,
        out / "accuracy_by_attractors.png",
        "agreement accuracy against the number of attractors",
        "attractors (nouns of the other number between subject and verb)",
        "accuracy",
        hline=0.5,
        hline_label="chance",
    )
    rep.figure("accuracy_by_attractors", fig, "Accuracy against attractors.")
    rnn_a, lstm_a = reports["rnn"].by_attractors, reports["lstm"].by_attractors
    rows = [
        [a, rnn_a[a]["n"], f"{rnn_a[a]['accuracy']:.3f}", f"{lstm_a[a]['accuracy']:.3f}"]
        for a in rnn_a
    ]
    rep.table(["attractors", "items", "RNN", "LSTM"], rows)
    rnn_d, lstm_d = reports["rnn"].by_distance, reports["lstm"].by_distance
    rows = [
        [d, rnn_d[d]["n"], f"{rnn_d[d]['accuracy']:.3f}", f"{lstm_d[d]['accuracy']:.3f}"]
        for d in rnn_d
    ]
    rep.table(["distance", "items", "RNN", "LSTM"], rows)
    loss = {
        c.upper(): ([25 * i for i in range(len(h["loss"]))], h["loss"])
        for c, h in histories.items()
    }
    fig = plot_lines(
        loss,
        out / "training_loss.png",
        "training loss (running mean)",
        "optimiser step",
        "cross-entropy per word (nats)",
        ylim=None,
    )
    rep.figure("training_loss", fig, "Training loss of both language models.")
    lo, hi = (0, min(2, cfg.max_test_distance)), _long_range(cfg)
    fig = plot_lines(
        _during_training(histories, lo, hi),
        out / "accuracy_during_training.png",
        "agreement accuracy while training: short and long distances",
        "optimiser step (32 sentences each)",
        "accuracy",
        hline=0.5,
        hline_label="chance",
    )
    rep.figure(
        "accuracy_during_training",
        fig,
        f"Mean accuracy over distances {lo[0]}-{lo[1]} and {hi[0]}-{hi[1]}, measured every "
        f"{max(1, cfg.steps // 12)} steps: how soon each model learns to carry the number.",
    )


def _cells_section(rep, cfg: DemoConfig, models, vocab, test, out: Path) -> dict:
    """Rank each model's cells by how well they predict the subject's number; LSTM
    pictures and the interactive page."""
    rep.heading("Cells that carry the subject's number")
    pick = np.random.default_rng(cfg.seed).choice(
        len(test), min(cfg.inspect_sentences, len(test)), replace=False
    )
    sample = [test[i] for i in sorted(pick)]  # sorted: by distance, as the test set is
    cells, states_by = {}, {}
    for c in ("rnn", "lstm"):
        st = collect_states(models[c], vocab, [s.tokens for s in sample])
        states_by[c] = st
        name, X, y, groups, _ = _number_data(st, sample)
        cells[c] = (name, predictive_cells(X, y, top=5, groups=groups, seed=cfg.seed))
    rows = []
    for c, (name, rk) in cells.items():
        rows.append(
            [
                c.upper(),
                name,
                ", ".join(map(str, rk.cells)),
                f"{rk.test_accuracy[0]:.3f}",
                f"{rk.probe_test_accuracy:.3f}",
                f"{rk.majority_accuracy:.3f}",
            ]
        )
    rep.paragraph(
        "Rows are the steps from the subject to the word before the verb; the label "
        "is the subject's number; accuracies are on held-out sentences."
    )
    rep.table(
        ["model", "state", "best cells", "best single cell", "all cells (logistic)", "majority"],
        rows,
    )
    series, min_d = {}, max(1, cfg.max_test_distance // 2)
    for c, (name, rk) in cells.items():
        course = _cell_course(states_by[c], name, rk.cells[0], sample, min_distance=min_d)
        for num, (xs, ys) in course.items():
            series[f"{c.upper()} {name}[{rk.cells[0]}], {num} subject"] = (xs, ys)
    fig = plot_lines(
        series,
        out / "number_cell_over_time.png",
        "best number cell of each model, mean over test sentences with distance "
        f">= {min_d}, against steps after the subject",
        "steps after the subject noun",
        "cell value",
        ylim=None,
    )
    rep.figure(
        "number_cell_over_time",
        fig,
        "The best single number cell of each model over the gap (LSTM: cell state c; "
        "RNN: hidden state h).",
    )
    lstm_states, (lname, lrank) = states_by["lstm"], cells["lstm"]
    long_k = max(range(len(sample)), key=lambda k: sample[k].distance)
    fig = plot_heatmaps(lstm_states, long_k, out / "lstm_heatmaps.png", cells=lrank.cells)
    rep.figure(
        "lstm_heatmaps",
        fig,
        "LSTM gates and states of the best number cells over one long test sentence.",
    )
    fig = plot_text_cell(
        lstm_states,
        lname,
        lrank.cells[0],
        out / "lstm_text_cell.png",
        sentences=list(range(max(0, len(sample) - 8), len(sample))),
    )
    rep.figure("lstm_text_cell", fig, f"Text coloured by LSTM {lname}[{lrank.cells[0]}].")
    fig = plot_saturation(lstm_states, out / "lstm_saturation.png")
    rep.figure("lstm_saturation", fig, "LSTM gate saturation (Karpathy et al. 2015).")
    k_page = list(range(max(0, len(sample) - 40), len(sample)))
    sub = StateSet(
        [lstm_states.tokens[k] for k in k_page],
        {n: [v[k] for k in k_page] for n, v in lstm_states.values.items()},
        lstm_states.mode,
        lstm_states.layer,
    )
    write_page(
        sub,
        out / "inspect.html",
        title="LSTM gates on agreement test sentences",
        default_state=lname,
        default_cell=lrank.cells[0],
        highlight=lrank.cells,
        notes="Highlighted: the cells that best predict the subject's number.",
    )
    rep.raw(
        "<p>Interactive: <a href='inspect.html'>inspect.html</a> (hover tokens, select "
        "spans). Models: <code>models/rnn</code>, <code>models/lstm</code> (lstmkit "
        "checkpoints).</p>"
    )
    return cells


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
    _accuracy_section(rep, cfg, reports, histories, out)
    cells = _cells_section(rep, cfg, models, vocab, test, out)
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
            c: _first_step(h["evals"], _long_range(cfg), 0.95) for c, h in histories.items()
        },
        "long_distances": list(_long_range(cfg)),
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
