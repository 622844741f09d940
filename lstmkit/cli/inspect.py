"""`lstmkit inspect`: look inside a language model's gates on some text.

lstmkit inspect plots   --checkpoint CKPT --text FILE --out DIR
lstmkit inspect html    --checkpoint CKPT --text FILE --out page.html
lstmkit inspect select  --checkpoint CKPT --text FILE --sentence 3 --span 1:5
lstmkit inspect predict --checkpoint CKPT --generated test.jsonl
lstmkit inspect lstmvis --checkpoint CKPT --text FILE --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _common(p: argparse.ArgumentParser, text: bool = True) -> None:
    p.add_argument("--checkpoint", required=True, help="lstmkit LM checkpoint directory")
    if text:
        p.add_argument("--text", required=True, help="text file, one tokenised sentence per line")
    p.add_argument(
        "--max-sentences",
        type=int,
        default=200,
        help="read at most this many sentences (default 200)",
    )
    p.add_argument("--lowercase", action="store_true", help="lowercase the text first")
    p.add_argument("--layer", type=int, default=-1, help="recurrent layer (default -1: last)")
    p.add_argument(
        "--bos",
        default="<eos>",
        help="token fed before each sentence if the vocabulary has it (default <eos>; '' for none)",
    )


def register(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="gate pictures, cell finding, interactive HTML, LSTMVis export",
        description="Read a language model's gates and states (from lstmkit's gate traces) "
        "over some text and show them.",
    )
    s = p.add_subparsers(dest="inspect_command", metavar="SUBCOMMAND")
    pl = s.add_parser(
        "plots",
        help="PNG heatmaps, text coloured by a cell, saturation plot",
        description="Writes heatmaps_K.png per sentence, text_cell.png and "
        "saturation.png (Karpathy et al. 2015) and figures.json.",
    )
    _common(pl)
    pl.add_argument("--out", required=True, help="output folder")
    pl.add_argument("--state", help="state for the coloured text (default c for LSTM, else h)")
    pl.add_argument("--cell", type=int, default=0, help="cell for the coloured text (default 0)")
    pl.add_argument("--cells", help="comma-separated cells for the heatmaps (default all)")
    pl.add_argument(
        "--heatmaps", type=int, default=3, help="heatmaps for the first N sentences (default 3)"
    )
    pl.set_defaults(func=run_plots)

    h = s.add_parser(
        "html",
        help="a self-contained interactive page",
        description="Hover a token to see its gates; drag over tokens to find the "
        "cells on across the span and where they match elsewhere.",
    )
    _common(h)
    h.add_argument("--out", required=True, help="HTML file to write")
    h.add_argument("--cell", type=int, default=0, help="cell shown first (default 0)")
    h.add_argument(
        "--threshold",
        type=float,
        default=0.3,
        help="a cell is 'on' at or above this value (default 0.3)",
    )
    h.set_defaults(func=run_html)

    se = s.add_parser(
        "select",
        help="cells on across a span, and where they match",
        description="LSTMVis select and match: the cells >= threshold across the "
        "span (and, with --off-around, below it next to the span), "
        "then other places where they are all on together.",
    )
    _common(se)
    se.add_argument("--sentence", type=int, required=True, help="sentence number (from 0)")
    se.add_argument("--span", required=True, help="token positions A:B (B excluded), from 0")
    se.add_argument("--state", help="which state (default c for LSTM, else h)")
    se.add_argument("--threshold", type=float, default=0.3, help="'on' threshold (default 0.3)")
    se.add_argument(
        "--off-around",
        type=int,
        default=0,
        help="also require 'off' at this many tokens each side (default 0)",
    )
    se.add_argument("--top", type=int, default=10, help="matches to list (default 10)")
    se.set_defaults(func=run_select)

    pr = s.add_parser(
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
    pr.add_argument("--state", help="which state (default c for LSTM, else h)")
    pr.add_argument("--top", type=int, default=10, help="cells to list (default 10)")
    pr.set_defaults(func=run_predict)

    lv = s.add_parser(
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
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    sents = [(ln.lower() if lowercase else ln).split() for ln in lines]
    sents = [s for s in sents if s][:limit]
    if not sents:
        raise SystemExit(f"{path} has no non-empty lines; expected one sentence per line")
    return sents


def _states(args, sentences):
    from lstmkit.inspect.states import collect_states
    from lstmkit.training.checkpoint import load_checkpoint

    model, _, vocab, _ = load_checkpoint(args.checkpoint)
    return collect_states(model, vocab, sentences, layer=args.layer, bos=args.bos or None)


def run_plots(args: argparse.Namespace) -> int:
    from lstmkit.inspect.plots import plot_heatmaps, plot_saturation, plot_text_cell

    st = _states(args, _read_text(args.text, args.max_sentences, args.lowercase))
    out = Path(args.out)
    cells = [int(c) for c in args.cells.split(",")] if args.cells else None
    figures = {}
    for k in range(min(args.heatmaps, len(st.tokens))):
        figures[f"heatmaps_{k}"] = plot_heatmaps(st, k, out / f"heatmaps_{k}.png", cells=cells)
    state = args.state or st.default_state()
    figures["text_cell"] = plot_text_cell(st, state, args.cell, out / "text_cell.png")
    if any(n in st.names for n in ("i", "f", "o", "r", "z")):
        figures["saturation"] = plot_saturation(st, out / "saturation.png")
    (out / "figures.json").write_text(json.dumps(figures))
    print(f"wrote {len(figures)} figures to {out}: " + ", ".join(f"{k}.png" for k in figures))
    return 0


def run_html(args: argparse.Namespace) -> int:
    from lstmkit.inspect.html import write_page

    st = _states(args, _read_text(args.text, args.max_sentences, args.lowercase))
    path = write_page(
        st,
        args.out,
        title=f"{args.checkpoint}: gates on {args.text}",
        default_cell=args.cell,
        threshold=args.threshold,
    )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser")
    return 0


def run_select(args: argparse.Namespace) -> int:
    from lstmkit.inspect.cells import match_cells, select_cells

    st = _states(args, _read_text(args.text, args.max_sentences, args.lowercase))
    try:
        a, b = (int(x) for x in args.span.split(":"))
    except ValueError:
        raise SystemExit(f"--span must be A:B (two integers), got {args.span!r}") from None
    if not 0 <= args.sentence < len(st.tokens):
        raise SystemExit(f"--sentence must be in 0..{len(st.tokens) - 1}")
    name = args.state or st.default_state()
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
        labels = Path(args.labels).read_text().splitlines()
        for k, (s, lab) in enumerate(zip(sentences, labels)):
            marks = lab.split()
            if len(marks) != len(s):
                raise SystemExit(
                    f"{args.labels} line {k + 1} has {len(marks)} labels for "
                    f"{len(s)} tokens; give one 0, 1 or - per token"
                )
            rows += [(k, t, int(m)) for t, m in enumerate(marks) if m != "-"]
    else:
        raise SystemExit("give --generated test.jsonl, or --text with --labels")
    st = _states(args, sentences)
    name = args.state or st.default_state()
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


def run_lstmvis(args: argparse.Namespace) -> int:
    from lstmkit.inspect.lstmvis import export_lstmvis

    st = _states(args, _read_text(args.text, args.max_sentences, args.lowercase))
    d = export_lstmvis(st, args.out, name=args.name)
    print(
        f"wrote {d}/states.hdf5, words.hdf5, words.dict, lstm.yml; serve it with LSTMVis: "
        f"python lstm_server.py -dir {d.parent}"
    )
    return 0
