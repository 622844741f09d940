"""The `lstmkit` command: one entry point, one subcommand module per concern.

Each module listed in COMMAND_MODULES defines `register(subparsers)`, which adds its
subcommands and sets `func` on each parser. Adding a command is adding a module here.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "lstmkit.cli.tour",
    "lstmkit.cli.lm",
    "lstmkit.cli.tasks",
    "lstmkit.cli.agreement",
    "lstmkit.cli.inspect",
    "lstmkit.cli.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lstmkit",
        description=(
            "lstmkit: exact, inspectable and fast LSTM / GRU / RNN for PyTorch. "
            "Run `lstmkit COMMAND --help` for the flags of each command."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


# What the applications import beyond torch: the `apps` extra (pyproject.toml)
APP_DEPENDENCIES = ("numpy", "tqdm", "safetensors", "matplotlib", "h5py", "tomli")


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 2
        result = args.func(args)
    except ModuleNotFoundError as exc:  # `pip install lstmkit` brings the library only
        top = (exc.name or "").split(".")[0]
        if top not in APP_DEPENDENCIES:
            raise
        print(
            f"error: lstmkit's commands need the applications' dependencies, and {top} is not "
            f"installed; install them with: pip install 'lstmkit[apps]'",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside a training run (which says more itself)
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
