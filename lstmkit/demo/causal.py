"""The demo's causal evidence: ablate the cells that the cell finder ranks highest and measure
agreement again (Lakretz et al. 2019), against random cells of the same number; and probes with
control tasks (Hewitt & Liang 2019) on the same cells (see lstmkit.demo).

Looking at a cell shows what it goes with; zeroing it shows what depends on it. An ablation here
sets the chosen units of the state the finder ranked (the LSTM's cell state c, the RNN's h) to
zero at every step, through the layer's `intervention=` argument, so the rest of the network
sees the edited state from each step on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lstmkit.agreement.score import AgreementReport, score_prefix_items
from lstmkit.demo.config import DemoConfig
from lstmkit.inspect.plots import plot_lines
from lstmkit.inspect.probes import probe_selectivity
from lstmkit.inspect.states import collect_states
from lstmkit.intervene import Intervention


def _span_accuracy(report: AgreementReport, span: tuple[int, int]) -> float:
    """Mean accuracy over the distances span[0]..span[1] (each distance weighs the same)."""
    return float(np.mean([report.by_distance[d]["accuracy"] for d in range(span[0], span[1] + 1)]))


def ablation_sizes(cfg: DemoConfig) -> list[int]:
    """The k of cfg.ablate that leave at least k other cells to draw the control from (and that
    the finder ranked: it ranks up to 10)."""
    return [k for k in cfg.ablate if 1 <= k <= min(cfg.hidden_size // 2, 10)]


def ablation_study(model, vocab, items, ranked: list[int], state: str, cfg: DemoConfig) -> dict:
    """Agreement with the finder's best k cells zeroed, and with k random other cells zeroed
    (`cfg.random_ablations` draws), for each k of ablation_sizes. Returns reports by k."""
    H = model.config.hidden_size
    rng = np.random.default_rng(cfg.seed)
    out = {"intact": score_prefix_items(model, vocab, items), "ranked": {}, "random": {}}
    for k in ablation_sizes(cfg):
        best = ranked[:k]
        out["ranked"][k] = score_prefix_items(
            model, vocab, items, intervention=Intervention.ablate(0, units=best, state=state)
        )
        others = [u for u in range(H) if u not in best]
        out["random"][k] = [
            score_prefix_items(
                model,
                vocab,
                items,
                intervention=Intervention.ablate(
                    0, units=sorted(rng.choice(others, k, replace=False).tolist()), state=state
                ),
            )
            for _ in range(cfg.random_ablations)
        ]
    return out


def ablation_summary(study: dict, spans: dict[str, tuple[int, int]]) -> dict:
    """Accuracy over each named span of distances: intact, best k ablated, random k (mean, min,
    max over draws)."""
    res = {"intact": {n: _span_accuracy(study["intact"], s) for n, s in spans.items()}}
    for k, rep in study["ranked"].items():
        rand = study["random"][k]
        res[str(k)] = {
            "ranked": {n: _span_accuracy(rep, s) for n, s in spans.items()},
            "random": {
                n: [_span_accuracy(r, s) for r in rand] for n, s in spans.items()
            },  # one per draw
        }
    return res


def _ablation_words(summary: dict, sizes: list[int]) -> str:
    """One sentence per model: the fewest best cells whose zeroing brings long-distance
    agreement within 0.1 of chance, and what the same number of random cells does."""
    out = []
    for c, s in summary.items():
        hit = [k for k in sizes if s[str(k)]["ranked"]["long"] < 0.6]
        if not hit:
            best = sizes[-1] if sizes else 0
            long_acc = s[str(best)]["ranked"]["long"] if sizes else s["intact"]["long"]
            out.append(
                f"{c.upper()}: zeroing up to {best} of its best cells leaves long-distance "
                f"agreement at {long_acc:.3f} (intact {s['intact']['long']:.3f})."
            )
            continue
        k, r = hit[0], s[str(hit[0])]
        out.append(
            f"{c.upper()}: zeroing its best {k} cell(s) takes long-distance agreement from "
            f"{s['intact']['long']:.3f} to {r['ranked']['long']:.3f} (chance is 0.5) while short "
            f"distances stay at {r['ranked']['short']:.3f}; {k} random cells: "
            f"{np.mean(r['random']['long']):.3f}."
        )
    return " ".join(out)


def probe_rows(model, vocab, sentences, ranked: list[int], cfg: DemoConfig) -> list[dict]:
    """Held-out probe accuracy on the subject's number and on Hewitt & Liang's control task
    (a random label per word type), for the best cell, the best k, k random cells and all."""
    states = collect_states(model, vocab, [s.tokens for s in sentences])
    name = states.default_state()
    xs, ys, words, groups = [], [], [], []
    for k, s in enumerate(sentences):
        vals = states.values[name][k]
        for t in range(s.subject_index, s.verb_index):  # from the subject to before the verb
            xs.append(vals[t])
            ys.append(int(s.plural))
            words.append(s.tokens[t])
            groups.append(k)
    k = max(ablation_sizes(cfg), default=1)
    others = [u for u in range(states.hidden_size) if u not in ranked[:k]]
    rand = sorted(np.random.default_rng(cfg.seed).choice(others, k, replace=False).tolist())
    units = {
        f"best cell ({name}[{ranked[0]}])": ranked[:1],
        f"best {k} cells": ranked[:k],
        f"{k} random cells": rand,
        f"all {states.hidden_size} cells": None,
    }
    results = probe_selectivity(
        np.array(xs), np.array(ys), np.array(words), np.array(groups), units, seed=cfg.seed
    )
    return [{"state": name, **r.to_dict()} for r in results]


def causal_section(rep, cfg: DemoConfig, models, vocab, items, probe_set, ranked, out: Path):
    """The ablation figure and table, and the probe table. ranked: {cell: (state, cells)}."""
    from lstmkit.demo.sections import long_range

    spans = {"short": (0, min(2, cfg.max_test_distance)), "long": long_range(cfg)}
    rep.heading("Causal test: ablate the number cells")
    rep.paragraph(
        "Each model's cells are ranked by how well each alone predicts the subject's number "
        "(the section above). Here the best k of them are set to zero at every step, and "
        f"agreement is measured again; the control is k random other cells "
        f"({cfg.random_ablations} draws). Long distances: {spans['long'][0]}-"
        f"{spans['long'][1]} words; short: {spans['short'][0]}-{spans['short'][1]}."
    )
    summary, series, bands, studies = {}, {}, {}, {}
    for c, model in models.items():
        state, cells = ranked[c]
        studies[c] = ablation_study(model, vocab, items, cells, state, cfg)
        summary[c] = ablation_summary(studies[c], spans)
        sizes = ablation_sizes(cfg)
        ks = [0, *sizes]
        s = summary[c]
        best = [s["intact"]["long"]] + [s[str(k)]["ranked"]["long"] for k in sizes]
        rand = [[s["intact"]["long"]]] + [s[str(k)]["random"]["long"] for k in sizes]
        series[f"{c.upper()}: best {state} cells zeroed"] = (ks, best)
        label = f"{c.upper()}: random {state} cells zeroed"
        series[label] = (ks, [float(np.mean(r)) for r in rand])
        bands[label] = ([min(r) for r in rand], [max(r) for r in rand])
    fig = plot_lines(
        series,
        out / "ablation.png",
        f"long-distance agreement ({spans['long'][0]}-{spans['long'][1]} words) with k cells "
        "zeroed at every step: the finder's best cells against random ones",
        "cells zeroed (k)",
        "accuracy",
        hline=0.5,
        hline_label="chance",
        bands=bands,
    )
    rep.figure(
        "ablation",
        fig,
        "Agreement at long distances after zeroing the k best number cells (as ranked by the "
        "cell finder) or k random other cells (mean; shaded: range over draws).",
    )
    rows = []
    for c, s in summary.items():
        for k in ablation_sizes(cfg):
            r = s[str(k)]
            rows.append(
                [
                    c.upper(),
                    k,
                    f"{s['intact']['short']:.3f} / {s['intact']['long']:.3f}",
                    f"{r['ranked']['short']:.3f} / {r['ranked']['long']:.3f}",
                    f"{np.mean(r['random']['short']):.3f} / {np.mean(r['random']['long']):.3f}",
                ]
            )
    rep.table(["model", "k", "intact (short / long)", "best k zeroed", "random k zeroed"], rows)
    rep.paragraph(_ablation_words(summary, ablation_sizes(cfg)))

    rep.heading("Probes with control tasks")
    probes = {c: probe_rows(m, vocab, probe_set, ranked[c][1], cfg) for c, m in models.items()}
    rep.paragraph(
        "A logistic-regression probe reads some cells at every step from the subject to the "
        "word before the verb and predicts the subject's number; the control task (Hewitt & "
        "Liang 2019) asks the same probe for a random label given to each word type, which "
        "only the identity of the current word can give. Selectivity is the difference. Both "
        f"are measured on held-out sentences of a fresh set of {len(probe_set)} (not the set "
        "the cells were ranked on)."
    )
    rows = [
        [
            c.upper(),
            p["name"],
            f"{p['task_accuracy']:.3f}",
            f"{p['control_accuracy']:.3f}",
            f"{p['selectivity']:+.3f}",
            f"{p['task_majority']:.2f} / {p['control_majority']:.2f}",
        ]
        for c, ps in probes.items()
        for p in ps
    ]
    rep.table(["model", "probe reads", "number", "control", "selectivity", "majority"], rows)
    return {"ablation": summary, "probes": probes, "spans": spans}
