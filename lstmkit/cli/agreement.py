"""`lstmkit agreement`: generate agreement data, train a small LM on it, score any LM.

    lstmkit agreement generate --out runs/agr
    lstmkit agreement train --data runs/agr/train.txt --cell lstm --out runs/agr/lstm
    lstmkit agreement eval runs/agr/lstm --data runs/agr/test.jsonl
    lstmkit agreement eval RUN/best --format linzen \
        --data ../shared/data/linzen_rnn_agr_simple/numpred.test.2
    lstmkit agreement suite RUN/best --data ../shared/data/marvin_linzen_2018

(`eval --checkpoint DIR`, the older spelling, still works.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lstmkit.cells.registry import cell_names
from lstmkit.cli.options import (
    NATURAL,
    POSITIVE,
    POSITIVE_FLOAT,
    HelpFormatter,
    add_ablate_flag,
    add_checkpoint_argument,
    add_seed_flag,
    add_threads_flag,
    checkpoint_of,
    parse_ablation,
    reports_errors,
    set_threads,
)

FORMATS = ("generated", "linzen", "gulordava", "marvin")


def register(sub) -> None:
    p = sub.add_parser(
        "agreement",
        help="subject-verb agreement: generate data, train, score any LM",
        formatter_class=HelpFormatter,
        description="Subject-verb agreement across a distance: a built-in sentence generator, "
        "readers for Linzen 2016, Gulordava 2018 and Marvin & Linzen 2018, and a "
        "scorer for any lstmkit language-model checkpoint.",
    )
    s = p.add_subparsers(dest="agreement_command", metavar="SUBCOMMAND")
    g = s.add_parser(
        "generate",
        formatter_class=HelpFormatter,
        help="write a generated training corpus and test set",
        description="Writes OUT/train.txt (one sentence per line), OUT/test.jsonl "
        "(test sentences with subject and verb positions, number, "
        "distance, attractors) and OUT/vocab.txt.",
    )
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--train", type=POSITIVE, default=20_000, metavar="N", help="training sentences")
    g.add_argument(
        "--max-distance",
        type=NATURAL,
        default=12,
        metavar="D",
        help="largest distance in training, in words between subject and verb",
    )
    g.add_argument(
        "--test-per-distance",
        type=POSITIVE,
        default=100,
        metavar="N",
        help="test sentences per distance",
    )
    g.add_argument(
        "--max-test-distance", type=NATURAL, default=18, metavar="D", help="test distances 0..D"
    )
    add_seed_flag(g)
    g.set_defaults(func=run_generate)

    t = s.add_parser(
        "train",
        formatter_class=HelpFormatter,
        help="train a small sentence-level LM on a corpus",
        description="Train an lstmkit LanguageModel on whole sentences (one per "
        "line) and save it as a checkpoint directory.",
    )
    t.add_argument("--data", required=True, help="text file, one tokenised sentence per line")
    t.add_argument("--out", required=True, help="checkpoint directory to write")
    t.add_argument("--cell", choices=cell_names(), default="lstm", help="recurrent cell")
    t.add_argument("--emb-size", type=POSITIVE, default=32, metavar="N", help="embedding size")
    t.add_argument("--hidden-size", type=POSITIVE, default=64, metavar="N", help="hidden units")
    t.add_argument(
        "--steps", type=POSITIVE, default=3000, metavar="N", help="optimiser steps of 32 sentences"
    )
    t.add_argument(
        "--lr", type=POSITIVE_FLOAT, default=3e-3, metavar="LR", help="Adam learning rate, > 0"
    )
    t.add_argument(
        "--max-seconds",
        type=POSITIVE_FLOAT,
        default=600.0,
        metavar="S",
        help="stop training after this many seconds",
    )
    add_seed_flag(t)
    add_threads_flag(t)
    t.set_defaults(func=run_train)

    e = s.add_parser(
        "eval",
        formatter_class=HelpFormatter,
        help="score a language model on agreement items",
        description="An item is right when the model gives the correct verb form "
        "a higher probability than the wrong one (Marvin & Linzen: the "
        "grammatical sentence a higher log-probability). Prints "
        "accuracy by distance and attractors, and the OOV share.",
    )
    add_checkpoint_argument(e)
    e.add_argument(
        "--data",
        required=True,
        help="the items: a test.jsonl (generated), a numpred.* file (linzen), the "
        "common stem of .text/.eval/.gold (gulordava), or a .json/.tsv "
        "(marvin)",
    )
    e.add_argument("--format", choices=FORMATS, default="generated", help="input format")
    e.add_argument(
        "--lowercase",
        action="store_true",
        help="lowercase the input (for models trained on lowercased text, e.g. PTB)",
    )
    e.add_argument(
        "--bos",
        default="<eos>",
        help="token fed before each sentence, if the vocabulary has it ('' for none)",
    )
    e.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow reading Marvin & Linzen's original .pickle (runs code from "
        "the file: only for files you trust)",
    )
    e.add_argument(
        "--limit", type=POSITIVE, metavar="N", help="score only the first N items (default: all)"
    )
    e.add_argument("--json", help="write the report (with per-item results) to this file")
    add_ablate_flag(
        e, "The items are also scored with them: accuracy without and with the ablation, by "
        "distance and attractors"
    )  # fmt: skip
    e.set_defaults(func=run_eval)

    m = s.add_parser(
        "suite",
        formatter_class=HelpFormatter,
        help="score a language model on all of Marvin & Linzen 2018, their table",
        description="Scores every test file of a Marvin & Linzen 2018 folder (JSON, one file "
        "per test) and prints their results table: each phenomenon's accuracy over the pairs "
        "the vocabulary can tell apart, with the unscorable pairs counted beside it (two "
        "sentences that are the same once unknown words become <unk>). NPI rows are split "
        "by contrast, as in the paper.",
    )
    add_checkpoint_argument(m)
    m.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="the folder of test files, e.g. ../shared/data/marvin_linzen_2018",
    )
    m.add_argument(
        "--per-test",
        type=POSITIVE,
        metavar="N",
        help="score at most N entries per file, spread over the file (default: all: 163,124 "
        "items in the released suite)",
    )
    m.add_argument(
        "--bos",
        default="<eos>",
        help="token fed before each sentence, if the vocabulary has it ('' for none)",
    )
    m.add_argument("--json", metavar="FILE", help="write the table as JSON to this file")
    m.set_defaults(func=run_suite)
    p.set_defaults(func=lambda a: p.print_help() or 2)


@reports_errors
def run_generate(args: argparse.Namespace) -> int:
    from lstmkit.agreement.grammar import AgreementGrammar
    from lstmkit.agreement.readers import write_generated

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gen = AgreementGrammar(args.seed)
    train = gen.corpus(args.train, args.max_distance)
    test = AgreementGrammar(args.seed + 1).test_set(
        args.test_per_distance, list(range(args.max_test_distance + 1))
    )
    (out / "train.txt").write_text("\n".join(" ".join(s.tokens) for s in train) + "\n")
    write_generated(test, out / "test.jsonl")
    (out / "vocab.txt").write_text("\n".join(gen.vocabulary()) + "\n")
    print(
        f"wrote {len(train):,} training sentences to {out / 'train.txt'}, {len(test):,} test "
        f"sentences to {out / 'test.jsonl'}"
    )
    print("example:", " ".join(test[-1].tokens))
    return 0


@reports_errors
def run_train(args: argparse.Namespace) -> int:
    from lstmkit.agreement.train import SentenceLMConfig, build_vocab, train_sentence_lm
    from lstmkit.training.checkpoint import save_checkpoint

    set_threads(args.threads)
    lines = Path(args.data).read_text(encoding="utf-8").splitlines()
    sentences = [ln.split() for ln in lines if ln.strip()]
    if len(sentences) < 32:
        raise SystemExit(
            f"{args.data} has {len(sentences)} sentences; training needs at least 32 (one batch)"
        )
    vocab = build_vocab(sentences)
    cfg = SentenceLMConfig(
        cell=args.cell,
        emb_size=args.emb_size,
        hidden_size=args.hidden_size,
        steps=args.steps,
        lr=args.lr,
        max_seconds=args.max_seconds,
        seed=args.seed,
    )
    model, hist = train_sentence_lm(sentences, vocab, cfg, desc=f"training {args.cell}")
    save_checkpoint(
        args.out,
        model,
        model.config,
        vocab,
        data={"level": "word", "source": str(args.data)},
        train=hist["config"],
    )
    print(
        f"{hist['steps']} steps in {hist['seconds']:.0f} s, final loss "
        f"{hist['loss'][-1]:.3f}; saved {args.out}"
    )
    return 0


def load_items(fmt: str, path: str, lowercase: bool, allow_pickle: bool = False):
    from lstmkit.agreement import readers

    if fmt == "generated":
        return readers.from_generated(readers.read_generated(path))
    if fmt == "linzen":
        return readers.read_linzen(path, lowercase=lowercase)
    if fmt == "gulordava":
        return readers.read_gulordava(path, lowercase=lowercase)
    return readers.read_marvin_linzen(path, lowercase=lowercase, allow_pickle=allow_pickle)


@reports_errors
def run_eval(args: argparse.Namespace) -> int:
    from lstmkit.agreement.score import (
        format_comparison,
        format_report,
        score_pair_items,
        score_prefix_items,
    )
    from lstmkit.training.checkpoint import load_checkpoint

    checkpoint = checkpoint_of(args, "agreement eval")
    model, _, vocab, _ = load_checkpoint(checkpoint)
    items = load_items(args.format, args.data, args.lowercase, args.allow_pickle)
    if args.limit is not None:
        items = items[: args.limit]
    bos = args.bos or None
    score = score_pair_items if args.format == "marvin" else score_prefix_items
    ablation = parse_ablation(args.ablate)
    if ablation is not None:  # checked against the model now, not after the first scoring
        from lstmkit.intervene import bind

        bind(ablation, model.rnn.spec, 1, 1)
    report = score(model, vocab, items, bos=bos)
    print(format_report(report, f"{checkpoint} on {args.data} ({args.format})"))
    out = {**report.to_dict(), "items": report.results}
    if ablation is not None:
        ablated = score(model, vocab, items, bos=bos, intervention=ablation)
        print(format_comparison(report, ablated, "ablated: " + ", ".join(args.ablate)))
        out["ablated"] = {**ablated.to_dict(), "ablate": args.ablate, "items": ablated.results}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    return 0


@reports_errors
def run_suite(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lstmkit.agreement.suites import MARVIN_LINZEN_ROWS, format_suite_table, score_marvin_linzen
    from lstmkit.training.checkpoint import load_checkpoint

    checkpoint = checkpoint_of(args, "agreement suite")
    model, _, vocab, _ = load_checkpoint(checkpoint)
    files = sum(len(v) for v in MARVIN_LINZEN_ROWS.values())
    with tqdm(total=files, unit="file", dynamic_ncols=True) as bar:

        def progress(name: str) -> None:
            bar.set_postfix_str(name, refresh=False)
            bar.update(1)

        rows = score_marvin_linzen(
            model, vocab, args.data, per_test=args.per_test, bos=args.bos or None,
            progress=progress,
        )  # fmt: skip
    print(format_suite_table(rows, f"{checkpoint} on Marvin & Linzen 2018 ({args.data})"))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    "checkpoint": str(checkpoint),
                    "data": args.data,
                    "per_test": args.per_test,
                    "rows": [r.to_dict() for r in rows],
                },
                indent=1,
            )  # fmt: skip
        )
        print(f"wrote {args.json}")
    return 0
