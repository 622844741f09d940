"""The flags of `lstmkit train`: one per TrainConfig / ModelConfig field, help with units.

Every flag defaults to argparse.SUPPRESS, so only flags the user actually gave appear in the
parsed namespace; those then override the config file (lstmkit.training.config.merge_config).
"""

from __future__ import annotations

import argparse

from lstmkit.cells.registry import cell_names
from lstmkit.cli.options import THREADS_HELP
from lstmkit.training.config import DEFAULT_LR, TrainConfig
from lstmkit.training.model import ModelConfig

TRAIN_EPILOG = """\
config files: --config run.toml (or .json) holds the same settings, with model ones in a [model]
table; flags given on the command line override it. Example:

    train_file = "data/train.txt"
    valid_file = "data/valid.txt"
    level = "word"
    lr = 20.0
    [model]
    hidden_size = 650
    dropout = 0.5

output: OUT/last (resumable), OUT/best (best validation loss), OUT/log.jsonl (one line per
validation). Under torchrun (e.g. `torchrun --nproc_per_node 2 -m lstmkit.cli.main train ...`)
each process trains on its part of the batch and only rank 0 writes.
"""


MODEL_DEFAULTS = ModelConfig(vocab_size=1).to_dict()


def _defaults() -> dict:
    return TrainConfig().to_dict()


def add_train_flags(p: argparse.ArgumentParser) -> None:
    from lstmkit.engines import ENGINES

    d = _defaults()
    S = argparse.SUPPRESS  # only flags actually given end up in the namespace (they override)

    def add(group, *names, dest, help, shown=None, **kw):
        default = d[dest] if dest in d else MODEL_DEFAULTS.get(dest)
        if shown is None:
            shown = "none" if default in ("", None) else default
        if kw.get("action") in ("store_true", "store_false") or shown == "":
            suffix = ""  # a switch ("(default: True)" on --no-progress only confuses), or required
        else:
            suffix = f" (default: {shown})"
        group.add_argument(*names, dest=dest, default=S, help=f"{help}{suffix}", **kw)

    g = p.add_argument_group("data")
    add(
        g,
        "--train",
        dest="train_file",
        metavar="FILE",
        help="training text file, UTF-8; required (here or as train_file in --config)",
        shown="",
    )
    add(
        g,
        "--valid",
        dest="valid_file",
        metavar="FILE",
        help="validation text file; without it there is no validation and no OUT/best",
    )
    add(g, "--out", dest="out", metavar="DIR", help="run directory for checkpoints and log")
    add(
        g,
        "--level",
        dest="level",
        choices=("char", "word", "ptb"),
        help="tokens are characters, whitespace-separated words with <eos> per line, or Penn "
        "Treebank format (word level, blank lines skipped)",
    )
    add(
        g,
        "--encoding-errors",
        dest="encoding_errors",
        choices=("strict", "replace"),
        help="what to do with bytes that are not UTF-8: stop with their position, or replace "
        "them with U+FFFD",
    )
    add(
        g,
        "--min-count",
        dest="min_count",
        type=int,
        metavar="N",
        help="tokens seen fewer than N times in the training file become <unk>",
    )
    add(
        g,
        "--max-vocab",
        dest="max_vocab",
        type=int,
        metavar="N",
        help="keep at most N vocabulary entries (most frequent, specials included)",
    )

    g = p.add_argument_group("model")
    add(g, "--cell", dest="cell", choices=cell_names(), help="recurrent cell")
    add(g, "--emb-size", dest="emb_size", type=int, metavar="N", help="embedding dimensions")
    add(g, "--hidden-size", dest="hidden_size", type=int, metavar="N", help="units per layer")
    add(g, "--layers", dest="num_layers", type=int, metavar="N", help="recurrent layers")
    add(
        g,
        "--dropout",
        dest="dropout",
        type=float,
        metavar="P",
        help="dropout probability on embeddings, between layers and before the decoder",
    )
    add(
        g,
        "--tie-weights",
        dest="tie_weights",
        action="store_true",
        help="share embedding and decoder matrix (needs --emb-size == --hidden-size)",
    )
    add(
        g,
        "--engine",
        dest="engine",
        choices=("auto", *sorted(ENGINES)),
        help="lstmkit engine; auto uses torch's fused kernel whenever the cell allows",
    )
    add(
        g,
        "--init",
        dest="init",
        choices=("torch", "uniform"),
        help="parameter init: each module's default, or all U(-r, r) with r = --init-range",
    )
    add(g, "--init-range", dest="init_range", type=float, metavar="R", help="r for --init uniform")
    add(
        g,
        "--embed-dropout",
        dest="embed_dropout",
        type=float,
        metavar="P",
        help="AWD-LSTM: drop whole words from the embedding matrix with probability P",
    )
    add(
        g,
        "--variational",
        dest="variational",
        action="store_true",
        help="AWD-LSTM: one dropout mask per sequence for the embedding/output dropout",
    )
    add(
        g,
        "--recurrent-dropout",
        dest="recurrent_dropout",
        type=float,
        metavar="P",
        help="variational dropout on h_{t-1} inside the recurrence (slower engine)",
    )
    add(
        g,
        "--weight-drop",
        dest="weight_drop",
        type=float,
        metavar="P",
        help="AWD-LSTM DropConnect on the hidden-to-hidden weights",
    )
    add(g, "--zoneout", dest="zoneout", type=float, metavar="P", help="zoneout rate")
    add(
        g,
        "--forget-bias",
        dest="forget_bias",
        type=float,
        metavar="B",
        help="initial LSTM forget-gate bias, e.g. 1.0",
    )
    add(g, "--peephole", dest="peephole", action="store_true", help="LSTM peephole connections")
    add(g, "--layer-norm", dest="layer_norm", action="store_true", help="layer-normalised cell")

    g = p.add_argument_group("optimisation")
    add(g, "--optimizer", dest="optimizer", choices=("sgd", "adam", "adamw"), help="optimizer")
    add(
        g,
        "--lr",
        dest="lr",
        type=float,
        metavar="LR",
        help="initial learning rate",
        shown=", ".join(f"{v:g} for {k}" for k, v in DEFAULT_LR.items()),
    )
    add(g, "--momentum", dest="momentum", type=float, metavar="M", help="SGD momentum")
    add(g, "--weight-decay", dest="weight_decay", type=float, metavar="W", help="L2 weight decay")
    add(
        g,
        "--clip",
        dest="clip",
        type=float,
        metavar="NORM",
        help="clip the gradient's global L2 norm to NORM (0 = off)",
    )
    add(
        g,
        "--loss-per",
        dest="loss_per",
        choices=("token", "sequence"),
        help="loss averaged over tokens, or summed over the bptt steps and averaged over the "
        "batch (Zaremba et al.; lr 1 there = lr BPTT here with 'token')",
    )
    add(
        g,
        "--schedule",
        dest="schedule",
        choices=("constant", "step", "plateau"),
        help="lr schedule: fixed; multiplied by --lr-decay every epoch after --decay-after; "
        "or multiplied by --lr-decay when an epoch does not improve validation loss",
    )
    add(g, "--lr-decay", dest="lr_decay", type=float, metavar="F", help="lr multiplier")
    add(
        g,
        "--decay-after",
        dest="decay_after",
        type=int,
        metavar="N",
        help="step schedule: epochs at the initial lr",
    )
    add(g, "--epochs", dest="epochs", type=int, metavar="N", help="passes over the training text")
    add(
        g,
        "--batch-size",
        dest="batch_size",
        type=int,
        metavar="B",
        help="parallel token streams (global: divided among torchrun processes)",
    )
    add(g, "--bptt", dest="bptt", type=int, metavar="T", help="steps per truncated-BPTT window")
    add(
        g,
        "--eval-batch-size",
        dest="eval_batch_size",
        type=int,
        metavar="B",
        help="parallel streams for validation",
    )
    add(
        g,
        "--eval-every",
        dest="eval_every",
        type=int,
        metavar="STEPS",
        help="validate and save OUT/last every STEPS steps (0 = at the end of each epoch)",
    )
    add(
        g,
        "--max-steps",
        dest="max_steps",
        type=int,
        metavar="STEPS",
        help="stop after STEPS steps in all and save OUT/last (0 = no limit)",
    )
    add(
        g,
        "--dry-run",
        dest="dry_run",
        action="store_true",
        help="run a few steps of everything (train, validate, save) to check a setup",
    )
    add(g, "--seed", dest="seed", type=int, metavar="N", help="random seed")
    add(g, "--device", dest="device", metavar="DEV", help="auto, cpu, cuda or cuda:N")
    add(
        g,
        "--threads",
        dest="threads",
        type=int,
        metavar="N",
        help=THREADS_HELP,
    )
    add(g, "--no-progress", dest="progress", action="store_false", help="no progress bar")
