"""`lstmkit inspect`: look inside a language model's gates on some text.

lstmkit inspect plots   CKPT --text FILE --out DIR
lstmkit inspect html    CKPT --text FILE --out page.html
lstmkit inspect select  CKPT --text FILE --sentence 3 --span 1:5
lstmkit inspect predict CKPT --generated test.jsonl
lstmkit inspect lstmvis CKPT --text FILE --out DIR

The checkpoint comes first, as in `lstmkit sample / evaluate / predict`; the older
`--checkpoint CKPT` still works and prints a note.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lstmkit.cli.options import (
    FINITE,
    NATURAL,
    POSITIVE,
    HelpFormatter,
    UsageError,
    add_ablate_flag,
    add_checkpoint_argument,
    checkpoint_of,
    parse_ablation,
    reports_errors,
)


def _common(p: argparse.ArgumentParser, text: bool = True) -> None:
    add_checkpoint_argument(p)
    if text:
        p.add_argument("--text", required=True, help="text file, one tokenised sentence per line")
    p.add_argument(
        "--max-sentences",
        type=POSITIVE,
        default=200,
        metavar="N",
        help="read at most this many sentences",
    )
    p.add_argument("--lowercase", action="store_true", help="lowercase the text first")
    p.add_argument(
        "--layer",
        type=int,
        default=-1,
        metavar="L",
        help="recurrent layer, from 0; negative counts from the last (default: -1, the last)",
    )
    p.add_argument(
        "--bos",
        default="<eos>",
        help="token fed before each sentence if the vocabulary has it ('' for none)",
    )
    add_ablate_flag(p, "The states shown are those of the ablated model")


def _sub(s, name: str, **kw) -> argparse.ArgumentParser:
    return s.add_parser(name, formatter_class=HelpFormatter, **kw)


def register(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="gate pictures, cell finding, interactive HTML, LSTMVis export",
        formatter_class=HelpFormatter,
        description="Read a language model's gates and states (from lstmkit's gate traces) "
        "over some text and show them. Each subcommand takes the checkpoint directory first: "
        "lstmkit inspect SUBCOMMAND CHECKPOINT ...",
    )
    s = p.add_subparsers(dest="inspect_command", metavar="SUBCOMMAND")
    pl = _sub(
        s,
        "plots",
        help="PNG heatmaps, text coloured by a cell, saturation plot",
        description="Writes heatmaps_K.png per sentence, text_cell.png and "
        "saturation.png (Karpathy et al. 2015) and figures.json.",
    )
    _common(pl)
    pl.add_argument("--out", required=True, help="output folder")
    pl.add_argument("--state", help="state for the coloured text (default: c for LSTM, else h)")
    pl.add_argument(
        "--cell", type=NATURAL, default=0, metavar="N", help="cell for the coloured text, from 0"
    )
    pl.add_argument(
        "--cells", help="comma-separated cells for the heatmaps, e.g. 0,5,7 (default: all)"
    )
    pl.add_argument(
        "--heatmaps",
        type=NATURAL,
        default=3,
        metavar="N",
        help="heatmaps for the first N sentences",
    )
    pl.set_defaults(func=run_plots)

    h = _sub(
        s,
        "html",
        help="a self-contained interactive page",
        description="Hover a token to see its gates; drag over tokens to find the "
        "cells on across the span and where they match elsewhere.",
    )
    _common(h)
    h.add_argument("--out", required=True, help="HTML file to write")
    h.add_argument("--cell", type=NATURAL, default=0, metavar="N", help="cell shown first")
    h.add_argument(
        "--threshold",
        type=FINITE,
        default=0.3,
        metavar="X",
        help="a cell is 'on' at or above this value",
    )
    h.set_defaults(func=run_html)

    se = _sub(
        s,
        "select",
        help="cells on across a span, and where they match",
        description="LSTMVis select and match: the cells >= threshold across the "
        "span (and, with --off-around, below it next to the span), "
        "then other places where they are all on together.",
    )
    _common(se)
    se.add_argument(
        "--sentence", type=NATURAL, required=True, metavar="K", help="sentence number, from 0"
    )
    se.add_argument(
        "--span", required=True, metavar="A:B", help="token positions A:B (B excluded), from 0"
    )
    se.add_argument("--state", help="which state (default: c for LSTM, else h)")
    se.add_argument("--threshold", type=FINITE, default=0.3, metavar="X", help="'on' threshold")
    se.add_argument(
        "--off-around",
        type=NATURAL,
        default=0,
        metavar="N",
        help="also require 'off' at this many tokens each side",
    )
    se.add_argument("--top", type=POSITIVE, default=10, metavar="N", help="matches to list")
    se.set_defaults(func=run_select)

    pr = _sub(
        s,
        "predict",
        help="cells whose state predicts a label",
        description="Ranks cells by held-out single-threshold accuracy, plus a "
        "logistic probe on all cells. Labels: --generated test.jsonl "
        "(the subject's number, at each step from the subject to "
        "the word before the verb), or --text with --labels (one "
        "line per sentence, one 0/1 or '-' (skip) per token).",
    )
    _common(pr, text=False)
    pr.add_argument("--generated", help="test.jsonl from `lstmkit agreement generate`")
    pr.add_argument("--text", help="text file (with --labels)")
    pr.add_argument("--labels", help="label file aligned with --text")
    pr.add_argument("--state", help="which state (default: c for LSTM, else h)")
    pr.add_argument("--top", type=POSITIVE, default=10, metavar="N", help="cells to list")
    pr.set_defaults(func=run_predict)

    lv = _sub(
        s,
        "lstmvis",
        help="export states for LSTMVis",
        description="Writes states.hdf5, words.hdf5, words.dict and lstm.yml: a "
        "project folder for LSTMVis's server.",
    )
    _common(lv)
    lv.add_argument("--out", required=True, help="project folder to write")
    lv.add_argument("--name", default="lstmkit model", help="project name in lstm.yml")
    lv.set_defaults(func=run_lstmvis)
    p.set_defaults(func=lambda a: p.print_help() or 2)


def _read_text(path: str, limit: int, lowercase: bool) -> list[list[str]]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path} is not valid UTF-8 (byte {e.start}); give a UTF-8 text file"
        ) from None
    sents = [(ln.lower() if lowercase else ln).split() for ln in lines]
    sents = [s for s in sents if s][:limit]
    if not sents:
        raise ValueError(f"{path} has no non-empty lines; expected one sentence per line")
    return sents


def _states(args, sentences):
    from lstmkit.inspect.states import collect_states
    from lstmkit.training.checkpoint import load_checkpoint

    model, config, vocab, _ = load_checkpoint(
        checkpoint_of(args, f"inspect {args.inspect_command}")
    )
    layers = config.num_layers
    if not -layers <= args.layer < layers:
        raise UsageError(
            f"--layer {args.layer} does not exist: this model has {layers} recurrent "
            f"layer{'s' if layers > 1 else ''}; give 0 to {layers - 1}, or -1 for the last"
        )
    return collect_states(
        model,
        vocab,
        sentences,
        layer=args.layer,
        bos=args.bos or None,
        intervention=parse_ablation(args.ablate),
    )


def _state_name(st, state: str | None) -> str:
    name = state or st.default_state()
    if name not in st.names:
        raise UsageError(
            f"--state {name!r}: this {st.mode} has the states {', '.join(st.names)}; give one "
            f"of them"
        )
    return name


def _check_cell(st, cell: int, flag: str = "--cell") -> int:
    if not 0 <= cell < st.hidden_size:
        raise UsageError(
            f"{flag} {cell} does not exist: the layer has {st.hidden_size} cells, "
            f"0 to {st.hidden_size - 1}"
        )
    return cell


def _cell_list(st, text: str) -> list[int]:
    try:
        cells = [int(c) for c in text.split(",")]
    except ValueError:
        raise UsageError(
            f"--cells must be comma-separated cell numbers such as 0,5,7, got {text!r}"
        ) from None
    return [_check_cell(st, c, "--cells: cell") for c in cells]


@reports_errors
def run_plots(args: argparse.Namespace) -> int:
    from lstmkit.inspect.plots import plot_heatmaps, plot_saturation, plot_text_cell

    st = _states(args, _read_text(args.text, args.max_sentences, args.lowercase))
    out = Path(args.out)
    cells = _cell_list(st, args.cells) if args.cells else None
    state = _state_name(st, args.state)
    _check_cell(st, args.cell)
    figures = {}
    for k in range(min(args.heatmaps, len(st.tokens))):
        figures[f"heatmaps_{k}"] = plot_heatmaps(st, k, out / f"heatmaps_{k}.png", cells=cells)
    figures["text_cell"] = plot_text_cell(st, state, args.cell, out / "text_cell.png")
    if any(n in st.names for n in ("i", "f", "o", "r", "z")):
        figures["saturation"] = plot_saturation(st, out / "saturation.png")
    (out / "figures.json").write_text(json.dumps(figures))
    print(f"wrote {len(figures)} figures to {out}: " + ", ".join(f"{k}.png" for k in figures))
    return 0


@reports_errors
def run_html(args: argparse.Namespace) -> int:
    from lstmkit.inspect.html import write_page

    st = _states(args, _read_text(args.text, args.max_sentences, args.lowercase))
    _check_cell(st, args.cell)
    path = write_page(
        st,
        args.out,
        title=f"{checkpoint_of(args, 'inspect html')}: gates on {args.text}",
        default_cell=args.cell,
        threshold=args.threshold,
    )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser")
    return 0


def _span(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise UsageError(f"--span must be A:B (two integers), got {text!r}") from None
    return a, b


@reports_errors
def run_select(args: argparse.Namespace) -> int:
    from lstmkit.inspect.cells import match_cells, select_cells

    a, b = _span(args.span)  # before the model runs: a typo costs nothing
    st = _states(args, _read_text(args.text, args.max_sentences, args.lowercase))
    if not 0 <= args.sentence < len(st.tokens):
        raise UsageError(
            f"--sentence {args.sentence} does not exist: {args.text} has {len(st.tokens)} "
            f"sentences (at most --max-sentences {args.max_sentences}); give 0 to "
            f"{len(st.tokens) - 1}"
        )
    name = _state_name(st, args.state)
    cells = select_cells(st.values[name][args.sentence], a, b, args.threshold, args.off_around)
    toks = st.tokens[args.sentence]
    print(
        f"span {a}:{b} = {' '.join(toks[a:b])!r}; {name} >= {args.threshold}: "
        f"{len(cells)} cells {cells}"
    )
    for m in match_cells(
        st, name, cells, args.threshold, length=b - a, exclude=(args.sentence, a, b), top=args.top
    ):
        words = " ".join(st.tokens[m.sentence][m.start : m.end])
        print(f"  sentence {m.sentence:4} {m.start:3}:{m.end:<3} score {m.score:.2f}  {words}")
    return 0


@reports_errors
def run_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from lstmkit.inspect.cells import predictive_cells

    rows = []  # (sentence, position, label)
    if args.generated:
        from lstmkit.agreement.readers import read_generated

        gen = read_generated(args.generated)[: args.max_sentences]
        sentences = [s.tokens for s in gen]
        for k, s in enumerate(gen):
            rows += [(k, t, int(s.plural)) for t in range(s.subject_index, s.verb_index)]
    elif args.text and args.labels:
        sentences = _read_text(args.text, args.max_sentences, args.lowercase)
        labels = Path(args.labels).read_text(encoding="utf-8").splitlines()
        for k, (s, lab) in enumerate(zip(sentences, labels)):
            marks = lab.split()
            if len(marks) != len(s):
                raise UsageError(
                    f"{args.labels} line {k + 1} has {len(marks)} labels for "
                    f"{len(s)} tokens; give one 0, 1 or - per token"
                )
            bad = sorted(set(marks) - {"0", "1", "-"})
            if bad:
                raise UsageError(
                    f"{args.labels} line {k + 1} has the labels {bad}; give one 0, 1 or - "
                    f"(skip) per token"
                )
            rows += [(k, t, int(m)) for t, m in enumerate(marks) if m != "-"]
    else:
        raise UsageError("give --generated test.jsonl, or --text with --labels")
    if not rows:
        raise UsageError("no labelled steps: every label is '-', or no sentence has one")
    st = _states(args, sentences)
    name = _state_name(st, args.state)
    X = np.array([st.values[name][k][t] for k, t, _ in rows])
    y = np.array([lab for _, _, lab in rows])
    groups = np.array([k for k, _, _ in rows])
    rk = predictive_cells(X, y, top=args.top, groups=groups)
    print(
        f"{len(rows)} labelled steps in {len(set(groups.tolist()))} sentences; held-out "
        f"accuracy (train {rk.n_train}, test {rk.n_test} steps), state {name}:"
    )
    for c, tr, te, thr, sg in zip(
        rk.cells, rk.train_accuracy, rk.test_accuracy, rk.thresholds, rk.signs
    ):
        print(
            f"  cell {c:4}  test {te:.3f}  train {tr:.3f}  label 1 when "
            f"{'>' if sg > 0 else '<='} {thr:.3f}"
        )
    print(
        f"all cells (logistic regression): {rk.probe_test_accuracy:.3f}; majority label: "
        f"{rk.majority_accuracy:.3f}"
    )
    return 0


@reports_errors
def run_lstmvis(args: argparse.Namespace) -> int:
    from lstmkit.inspect.lstmvis import export_lstmvis

    st = _states(args, _read_text(args.text, args.max_sentences, args.lowercase))
    d = export_lstmvis(st, args.out, name=args.name)
    print(
        f"wrote {d}/states.hdf5, words.hdf5, words.dict, lstm.yml; serve it with LSTMVis: "
        f"python lstm_server.py -dir {d.parent}"
    )
    return 0
