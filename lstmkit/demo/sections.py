"""The demo's report sections: accuracy against distance and during training, and the cells that
carry the subject's number (see lstmkit.demo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lstmkit.demo.config import DemoConfig
from lstmkit.inspect.cells import predictive_cells
from lstmkit.inspect.html import write_page
from lstmkit.inspect.plots import plot_heatmaps, plot_lines, plot_saturation, plot_text_cell
from lstmkit.inspect.states import StateSet, collect_states


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


def long_range(cfg: DemoConfig) -> tuple[int, int]:
    D = cfg.max_test_distance
    return (min(D, max(3, D // 2 + 1)), D)


def eval_every(cfg: DemoConfig) -> int:
    """Steps between the agreement measurements taken while training."""
    return max(1, cfg.steps // 12)


def first_step(evals: list[dict], span: tuple[int, int], level: float) -> int | None:
    """The first evaluated step at which mean accuracy over the distances in span >= level."""
    for e in evals:
        acc = np.mean([e["by_distance"][d] for d in range(span[0], span[1] + 1)])
        if acc >= level:
            return int(e["step"])
    return None


def _spread(rows: list[list[float]]) -> tuple[list[float], list[float], list[float]]:
    """Mean, min and max over seeds (rows: one list per seed, cut to the shortest)."""
    n = min(len(r) for r in rows)
    a = np.array([r[:n] for r in rows])
    return a.mean(0).tolist(), a.min(0).tolist(), a.max(0).tolist()


def _during_training(histories, spans):
    """Series and bands for the plot: mean accuracy over each span of distances against the
    training step, mean and range over the seeds."""
    series, bands = {}, {}
    for c, hs in histories.items():
        n = min(len(h["evals"]) for h in hs)
        steps = [e["step"] for e in hs[0]["evals"][:n]]
        for a, b in spans:
            per_seed = [
                [float(np.mean([e["by_distance"][d] for d in range(a, b + 1)])) for e in h["evals"]]
                for h in hs
            ]
            mean, lo, hi = _spread(per_seed)
            label = f"{c.upper()}, distance {a}-{b}"
            series[label], bands[label] = (steps, mean), (lo, hi)
    return series, bands


def _by(reports, key: str):
    """x values and (mean, min, max over seeds) of the accuracy by distance or attractors."""
    keys = list(getattr(reports[0], key))
    rows = [[getattr(r, key)[k]["accuracy"] for k in keys] for r in reports]
    return [float(k) for k in keys], *_spread(rows)


def accuracy_section(rep, cfg: DemoConfig, reports, histories, out: Path) -> None:
    """Accuracy by distance (the headline) and by attractors, the tables, the training curves.
    reports, histories: {cell: [one per seed]}."""
    seeds = len(reports["rnn"])
    span = long_range(cfg)
    rep.heading("Agreement accuracy at a fixed budget")
    series, bands = {}, {}
    for c, rs in reports.items():
        xs, mean, lo, hi = _by(rs, "by_distance")
        series[c.upper()], bands[c.upper()] = (xs, mean), (lo, hi)
    fig = plot_lines(
        series,
        out / "accuracy_by_distance.png",
        f"agreement accuracy against distance after {cfg.steps} training steps each, mean "
        f"over {seeds} seed(s) (shaded: range); training distances 0-{cfg.max_train_distance}",
        "distance (words between subject and verb)",
        "accuracy",
        hline=0.5,
        hline_label="chance",
        bands=bands,
    )
    rep.figure(
        "accuracy_by_distance",
        fig,
        f"The same budget for both: {cfg.steps} steps of 32 sentences. Where the curve of a "
        "model falls to the chance line, it no longer carries the subject's number to the verb.",
    )
    rep.paragraph(_more_training(cfg, histories, span))
    series, bands = {}, {}
    for c, rs in reports.items():
        xs, mean, lo, hi = _by(rs, "by_attractors")
        series[c.upper()], bands[c.upper()] = (xs, mean), (lo, hi)
    fig = plot_lines(
        series,
        out / "accuracy_by_attractors.png",
        "agreement accuracy against the number of attractors",
        "attractors (nouns of the other number between subject and verb)",
        "accuracy",
        hline=0.5,
        hline_label="chance",
        bands=bands,
    )
    rep.figure("accuracy_by_attractors", fig, "Accuracy against attractors (mean over seeds).")
    for key, head in (("by_attractors", "attractors"), ("by_distance", "distance")):
        rows = []
        first = getattr(reports["rnn"][0], key)
        for k in first:
            cells = [first[k]["n"]]
            for c in ("rnn", "lstm"):
                accs = [getattr(r, key)[k]["accuracy"] for r in reports[c]]
                cells.append(f"{np.mean(accs):.3f} ({min(accs):.2f}-{max(accs):.2f})")
            rows.append([k, *cells])
        rep.table([head, "items", "RNN mean (range)", "LSTM mean (range)"], rows)
    loss = {
        c.upper(): ([25 * i for i in range(len(hs[0]["loss"]))], hs[0]["loss"])
        for c, hs in histories.items()
    }
    fig = plot_lines(
        loss,
        out / "training_loss.png",
        "training loss (running mean), first seed",
        "optimiser step",
        "cross-entropy per word (nats)",
        ylim=None,
    )
    rep.figure("training_loss", fig, "Training loss of both language models (first seed).")
    lo = (0, min(2, cfg.max_test_distance))
    series, bands = _during_training(histories, (lo, span))
    fig = plot_lines(
        series,
        out / "accuracy_during_training.png",
        "agreement accuracy while training: short and long distances (mean over seeds)",
        "optimiser step (32 sentences each)",
        "accuracy",
        hline=0.5,
        hline_label="chance",
        bands=bands,
    )
    rep.figure(
        "accuracy_during_training",
        fig,
        f"Mean accuracy over distances {lo[0]}-{lo[1]} and {span[0]}-{span[1]}, measured every "
        f"{eval_every(cfg)} steps (shaded: range over seeds): how soon each model learns to "
        "carry the number.",
    )


def _more_training(cfg: DemoConfig, histories, span) -> str:
    """What the training curves say about a longer budget, in words (from the measurements)."""
    parts = []
    for c, hs in histories.items():
        got = [first_step(h["evals"], span, 0.95) for h in hs]
        done = [s for s in got if s is not None]
        parts.append(
            f"the {c.upper()} reached a mean accuracy of 0.95 at distances {span[0]}-{span[1]} "
            f"in {len(done)} of {len(hs)} seed(s)"
            + (f" (first at step {', '.join(map(str, done))})" if done else "")
        )
    return (
        f"Within the budget, {'; '.join(parts)}. This is a question of how soon, not of "
        "whether: in this small grammar a plain RNN does learn to carry the number over every "
        "test distance when it trains longer. With the default settings and --steps 3000, all "
        "three RNN seeds got there, each later than the LSTM of the same seed, and both kinds "
        "ended at 0.998 or better (benchmarks/results/demo_3000)."
    )


def cells_section(rep, cfg: DemoConfig, models, vocab, test, out: Path) -> dict:
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
        cells[c] = (name, predictive_cells(X, y, top=10, groups=groups, seed=cfg.seed))
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
