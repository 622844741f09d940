"""What the subcommands' flags share: one help format, range-checked numbers, --threads, the
checkpoint argument, and one way of turning an expected failure into "error: <sentence>".

The number checkers are argparse `type`s: a value out of range becomes argparse's own usage
error (exit status 2, "lstmkit CMD: error: argument --flag: ..."), before any file is read or
any model is built. Failures found later (a missing file, a cell the model does not have) go
through `reports_errors`, which prints one "error: ..." line and returns exit status 1.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from collections.abc import Callable

from lstmkit.training.config import MAX_SEED  # the range `lstmkit train --seed` accepts too
from lstmkit.training.inference import SEED_TEXT

# One default for every command (train included): 1 thread gives the same numbers whatever the
# machine's core count (the thread count changes float results) and does not slow down a shared
# CPU, where more threads spin; large models on an idle CPU are faster with 0.
THREADS_HELP = "torch CPU threads; 0 = torch's default (one per core)"


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, with "(default: X)" after every option that has a default to show.

    Left alone: help that already states its default (e.g. "(default: c for LSTM, else h)"),
    required options, positionals, options whose default is None (nothing to show), and on/off
    flags such as store_true (a "(default: False)" there says nothing)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "(default" in text
            or action.required
            or not action.option_strings
            or action.default is None
            or action.default is argparse.SUPPRESS
            or action.nargs == 0  # store_true / store_false / store_const / help
        ):
            return text
        # argparse %-formats help strings, so a "%" in a default must be doubled
        return f"{text} (default: {show_default(action.default)})".replace("%", "%%")


def show_default(value: object) -> str:
    """A default as the help prints it: 20,000 rather than 20000, 0.003 rather than 0.003000."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        return format(value, "g")
    if value == "":
        return "empty"
    return str(value)


def _bounds(lo: float | None, hi: float | None, lo_open: bool = False, hi_text: str = "") -> str:
    top = hi_text or (f"{hi:,}" if isinstance(hi, int) else show_default(hi))
    bottom = f"{lo:,}" if isinstance(lo, int) else show_default(lo)
    if lo is not None and hi is not None:
        return f"> {bottom} and <= {top}" if lo_open else f"from {bottom} to {top}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {bottom}"
    return f"<= {top}" if hi is not None else ""


def int_in(lo: int | None = None, hi: int | None = None, hi_text: str = "") -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi] (a bound of None is no bound); hi_text is how
    the message writes hi (e.g. "2**63 - 1025")."""

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # also a number too long for int() (more than 4,300 digits)
            raise argparse.ArgumentTypeError(
                f"expected an integer {_bounds(lo, hi, hi_text=hi_text)}, got {text[:40]!r}"
            ) from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(
                f"{text[:40]} is out of range; give an integer {_bounds(lo, hi, hi_text=hi_text)}"
            )
        return value

    return integer


def float_in(
    lo: float | None = None, hi: float | None = None, lo_open: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite number in [lo, hi], or in (lo, hi] with lo_open."""

    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number {_bounds(lo, hi, lo_open)}".rstrip() + f", got {text[:40]!r}"
            ) from None
        low_ok = lo is None or (value > lo if lo_open else value >= lo)
        if not math.isfinite(value) or not low_ok or (hi is not None and value > hi):
            wanted = f"a finite number {_bounds(lo, hi, lo_open)}".rstrip()
            raise argparse.ArgumentTypeError(f"{text[:40]} is out of range; give {wanted}")
        return value

    return number


POSITIVE = int_in(1)
NATURAL = int_in(0)  # 0, 1, 2, ...
SEED = int_in(0, MAX_SEED, SEED_TEXT)
FINITE = float_in()
POSITIVE_FLOAT = float_in(0.0, lo_open=True)


def add_seed_flag(p: argparse.ArgumentParser, default: int | None = 0, help: str = "") -> None:
    p.add_argument(
        "--seed",
        type=SEED,
        default=default,
        metavar="N",
        help=help or f"random seed, 0 to {SEED_TEXT}",
    )


def max_threads() -> int:
    # more threads than this only oversubscribe the CPU; torch.set_num_threads(100000) hangs
    return 4 * (os.cpu_count() or 1)


def add_threads_flag(p: argparse.ArgumentParser) -> None:
    """--threads N with the same default (1) and meaning in every command that trains."""
    p.add_argument(
        "--threads", type=int_in(0, max_threads()), default=1, metavar="N", help=THREADS_HELP
    )


def set_threads(n: int) -> None:
    """Apply --threads: N > 0 threads, 0 leaves torch's own default."""
    if n:
        import torch

        torch.set_num_threads(n)


def add_checkpoint_argument(p: argparse.ArgumentParser) -> None:
    """The checkpoint as the first positional argument, as sample / evaluate / predict take it;
    `--checkpoint DIR` still works (the older spelling of inspect and agreement eval)."""
    p.add_argument(
        "checkpoint",
        nargs="?",
        metavar="CHECKPOINT",
        help="lstmkit LM checkpoint directory (RUN/best or RUN/last)",
    )
    p.add_argument(
        "--checkpoint",
        dest="checkpoint_option",
        metavar="DIR",
        help="older spelling of CHECKPOINT (deprecated)",
    )


def add_ablate_flag(p: argparse.ArgumentParser, what: str) -> None:
    """--ablate LAYER:STATE:UNITS (repeatable): units fixed to 0 at every step."""
    p.add_argument(
        "--ablate",
        action="append",
        metavar="LAYER:STATE:UNITS",
        help="units fixed to 0 at every step, e.g. 1:c:12,45 (layer 1's cell units 12 and 45) "
        f"or 0:h:all; repeat for more (lstmkit.Intervention). {what}",
    )


def parse_ablation(specs: list[str] | None):
    """["1:c:12,45", "0:h:all"] -> one lstmkit.Intervention that zeroes those units (None for
    no --ablate). The layer, state and units are checked against the model when it runs."""
    from lstmkit.intervene import Intervention

    if not specs:
        return None
    total = Intervention(())
    for spec in specs:
        parts = spec.split(":")
        if len(parts) != 3:
            raise UsageError(
                f"--ablate {spec!r}: expected LAYER:STATE:UNITS (three parts), e.g. 1:c:12,45 "
                "or 0:h:all"
            )
        try:
            layer, state, units = int(parts[0]), parts[1], parts[2]
            chosen = None if units == "all" else [int(u) for u in units.split(",")]
        except ValueError:
            raise UsageError(
                f"--ablate {spec!r}: expected LAYER:STATE:UNITS, e.g. 1:c:12,45 or 0:h:all"
            ) from None
        total = total + Intervention.ablate(layer=layer, units=chosen, state=state)
    return total


class UsageError(Exception):
    """A combination of flags that argparse cannot check by itself; reported as 'error: ...'."""


def checkpoint_of(args: argparse.Namespace, command: str) -> str:
    """The checkpoint given positionally or with the deprecated --checkpoint, exactly once."""
    positional, option = args.checkpoint, getattr(args, "checkpoint_option", None)
    if positional is not None and option is not None and positional != option:
        raise UsageError(
            f"two checkpoints given ({positional!r} and --checkpoint {option!r}); give one, as "
            f"the first argument: lstmkit {command} CHECKPOINT ..."
        )
    if positional is None and option is None:
        raise UsageError(
            f"no checkpoint given; give its directory as the first argument: "
            f"lstmkit {command} CHECKPOINT ..."
        )
    if positional is None:
        print(
            f"note: --checkpoint is deprecated; give the checkpoint as the first argument: "
            f"lstmkit {command} {option} ...",
            file=sys.stderr,
        )
        # resolved once: a second call neither repeats the note nor sees two checkpoints
        args.checkpoint, args.checkpoint_option = option, None
    return args.checkpoint


def _expected_errors() -> tuple[type[BaseException], ...]:
    from lstmkit.data.text import TextDataError
    from lstmkit.training.checkpoint import CheckpointError
    from lstmkit.training.loop import NonFiniteLossError

    # ValueError covers UnicodeDecodeError and json.JSONDecodeError; OSError missing and
    # unreadable files; KeyError Vocab.encode's "token ... is not in the vocabulary". Anything
    # else is a bug and keeps its traceback.
    return (
        UsageError, TextDataError, CheckpointError, NonFiniteLossError, ValueError, OSError,
        KeyError,
    )  # fmt: skip


def error_sentence(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str):
        return e.args[0]  # str(KeyError) would quote the sentence
    return str(e)


def reports_errors(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a command's run function: an expected failure prints 'error: <sentence>' on stderr
    and returns exit status 1, instead of a traceback (or a bare SystemExit message)."""

    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except SystemExit as e:
            if isinstance(e.code, str):  # raise SystemExit("sentence") in the commands
                print(f"error: {e.code}", file=sys.stderr)
                return 1
            raise
        except _expected_errors() as e:
            print(f"error: {error_sentence(e)}", file=sys.stderr)
            return 1

    return wrapper
