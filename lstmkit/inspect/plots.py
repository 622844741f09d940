"""Pictures (PNG, matplotlib): gate heatmaps, text coloured by a cell, the saturation plot, and
the line plots of the demo and the task sweeps.

Every function writes one PNG and returns the numbers it drew as a JSON-able dict, so a report
can keep the data of each figure next to the picture.

Saturation (Karpathy, Johnson & Fei-Fei 2015, fig. 4): for each gate and each cell, the fraction
of steps at which the gate is below 0.1 (left-saturated, x axis) against the fraction above 0.9
(right-saturated, y axis). Cells near the top left are gates that are almost always open,
e.g. forget gates that keep their cell's value for long stretches.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lstmkit.inspect.states import StateSet  # noqa: E402

GATE_TITLES = {
    "i": "input gate i",
    "f": "forget gate f",
    "g": "candidate g",
    "o": "output gate o",
    "c": "cell state c",
    "h": "hidden state h",
    "r": "reset gate r",
    "z": "update gate z",
    "n": "candidate n",
}
SIGMOID_GATES = ("i", "f", "o", "r", "z")


def _range(name: str) -> tuple[float, float, str]:
    """Colour limits and map: gates in [0, 1], tanh values in [-1, 1], c unbounded."""
    if name in SIGMOID_GATES:
        return 0.0, 1.0, "viridis"
    return -1.0, 1.0, "RdBu_r"


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_heatmaps(
    states: StateSet,
    sentence: int,
    path: str | Path,
    names: list[str] | None = None,
    cells: list[int] | None = None,
) -> dict:
    """One heatmap per gate / state: rows are cells, columns the tokens of one sentence."""
    fig, result = heatmaps_figure(states, sentence, names, cells)
    _save(fig, path)
    return result


def heatmaps_figure(
    states: StateSet,
    sentence: int,
    names: list[str] | None = None,
    cells: list[int] | None = None,
) -> tuple[Figure, dict]:
    """The figure of plot_heatmaps, not yet saved (and its data), e.g. to check its layout."""
    names = list(names or states.names)
    tokens = states.tokens[sentence]
    cells = list(range(states.hidden_size)) if cells is None else list(cells)
    width = max(6, 0.45 * len(tokens) + 2)
    # inches per heatmap: its rows of cells, plus its title and the rotated tokens under it
    # (which grow with the longest token); too little and they overlap the next heatmap
    longest = max((len(t) for t in tokens), default=1)
    decorations = 0.45 + 0.06 * min(longest, 25)
    height = 0.5 + len(names) * (max(0.35, 0.12 * len(cells)) + decorations)
    # constrained layout keeps the suptitle above the first heatmap and makes room for the
    # colorbars; tight_layout put the title over the first heatmap of a tall figure
    fig, axes = plt.subplots(
        len(names), 1, figsize=(width, height), squeeze=False, layout="constrained"
    )
    data = {}
    for ax, name in zip(axes[:, 0], names):
        vals = states.values[name][sentence][:, cells].T  # (cells, T)
        lo, hi, cmap = _range(name)
        if name == "c":
            lim = max(1.0, float(np.abs(vals).max()))
            lo, hi = -lim, lim
        im = ax.imshow(vals, aspect="auto", cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(GATE_TITLES.get(name, name), fontsize=9, loc="left")
        ax.set_yticks(range(len(cells)) if len(cells) <= 16 else [])
        if len(cells) <= 16:
            ax.set_yticklabels([str(c) for c in cells], fontsize=7)
        ax.set_xticks(range(len(tokens)))
        ax.set_xticklabels(tokens, rotation=60, fontsize=8, ha="right")
        fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
        data[name] = np.round(vals.astype(np.float64), 4).tolist()  # float64: short JSON
    layer = "last layer" if states.layer == -1 else f"layer {states.layer}"
    fig.suptitle(f"{states.mode}, {layer}: gates and states, one row per cell", fontsize=10)
    return fig, {"kind": "heatmaps", "tokens": tokens, "cells": cells, "values": data}


def plot_text_cell(
    states: StateSet,
    name: str,
    cell: int,
    path: str | Path,
    sentences: list[int] | None = None,
    width: int = 90,
) -> dict:
    """The text, each token's background coloured by one cell's value (red +, blue -)."""
    sentences = list(range(min(12, len(states.tokens)))) if sentences is None else sentences
    lo, hi, cmap_name = _range(name)
    if name == "c":  # unbounded: scale to the largest |value| shown
        lim = max(
            1e-6, max(float(np.abs(states.values[name][k][:, cell]).max()) for k in sentences)
        )
        lo, hi = -lim, lim
    cmap = plt.get_cmap(cmap_name)
    lines: list[list[tuple[str, float]]] = []
    for k in sentences:
        row: list[tuple[str, float]] = []
        used = 0
        for tok, v in zip(states.tokens[k], states.values[name][k][:, cell]):
            if used + len(tok) + 1 > width and row:
                lines.append(row)
                row, used = [], 0
            row.append((tok, float(v)))
            used += len(tok) + 1
        lines.append(row)
    fig = plt.figure(figsize=(width * 0.09, 0.32 * len(lines) + 0.6))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    ax.set_xlim(0, width)
    ax.set_ylim(len(lines) + 1, 0)
    scale = "red = high, blue = low" if cmap_name == "RdBu_r" else "yellow = high, dark = low"
    ax.text(
        0.5,
        0.5,
        f"{GATE_TITLES.get(name, name)}, cell {cell}: {scale}",
        fontsize=9,
        family="monospace",
        va="center",
    )
    for y, row in enumerate(lines, 1):
        x = 0.5
        for tok, v in row:
            level = (np.clip(v, lo, hi) - lo) / (hi - lo)  # 0..1
            colour = cmap(level)
            dark = (
                level > 0.8
                or (cmap_name == "RdBu_r" and level < 0.2)
                or (cmap_name == "viridis" and level < 0.5)
            )
            ax.text(
                x,
                y + 0.5,
                tok,
                family="monospace",
                fontsize=10,
                va="center",
                color="white" if dark else "black",
                bbox={"boxstyle": "square,pad=0.15", "fc": colour, "ec": "none"},
            )
            x += len(tok) + 1
    _save(fig, path)
    return {
        "kind": "text_cell",
        "state": name,
        "cell": cell,
        "sentences": [
            [
                (t, round(float(v), 4))
                for t, v in zip(states.tokens[k], states.values[name][k][:, cell])
            ]
            for k in sentences
        ],
    }


def saturation(states: StateSet, low: float = 0.1, high: float = 0.9) -> dict[str, dict]:
    """Per sigmoid gate: for each cell, the fraction of steps below `low` and above `high`."""
    out = {}
    for name in states.names:
        if name not in SIGMOID_GATES:
            continue
        x = np.concatenate(states.values[name], axis=0)  # (N, H)
        out[name] = {"left": (x < low).mean(0).tolist(), "right": (x > high).mean(0).tolist()}
    return out


def plot_saturation(
    states: StateSet, path: str | Path, low: float = 0.1, high: float = 0.9
) -> dict:
    sat = saturation(states, low, high)
    if not sat:
        raise ValueError(
            f"a {states.mode} has no sigmoid gates to plot saturation for; use an LSTM or a GRU"
        )
    fig, axes = plt.subplots(1, len(sat), figsize=(3.2 * len(sat), 3.3), squeeze=False)
    for ax, (name, d) in zip(axes[0], sat.items()):
        ax.scatter(d["left"], d["right"], s=12, alpha=0.7)
        ax.plot([0, 1], [1, 0], color="0.7", lw=0.8)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(GATE_TITLES.get(name, name), fontsize=9)
        ax.set_xlabel(f"fraction of steps < {low} (left-saturated)", fontsize=8)
    axes[0, 0].set_ylabel(f"fraction of steps > {high} (right-saturated)", fontsize=8)
    layer = "last layer" if states.layer == -1 else f"layer {states.layer}"
    fig.suptitle(f"gate saturation, {states.mode}, {layer} (one dot per cell)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return {"kind": "saturation", "low": low, "high": high, "gates": sat}


def plot_lines(
    series: dict[str, tuple[list, list]],
    path: str | Path,
    title: str,
    xlabel: str,
    ylabel: str,
    ylim: tuple[float, float] | None = (0.0, 1.02),
    hline: float | None = None,
    hline_label: str = "",
    bands: dict[str, tuple[list, list]] | None = None,
) -> dict:
    """Generic line plot: series label -> (x values, y values). `bands`: series label -> (low,
    high) at the same x values, shaded around that series (e.g. the range over seeds)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bands = bands or {}
    for label, (xs, ys) in series.items():
        (line,) = ax.plot(xs, ys, marker="o", ms=3.5, label=label)
        if label in bands:
            lo, hi = bands[label]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.18, lw=0)
    if hline is not None:
        ax.axhline(hline, color="0.6", ls="--", lw=0.9, label=hline_label or None)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return {
        "kind": "lines",
        "title": title,
        "xlabel": xlabel,
        "ylabel": ylabel,
        "series": {
            k: {"x": list(map(float, x)), "y": list(map(float, y))}
            | (
                {"low": list(map(float, bands[k][0])), "high": list(map(float, bands[k][1]))}
                if k in bands
                else {}
            )
            for k, (x, y) in series.items()
        },
    }
