"""Command line: a thin argparse layer. Each subcommand lives in ``llmsim/commands/<name>.py``
and exposes ``register(subparsers)`` (which calls ``set_defaults(func=run)``) and
``run(args) -> int``.

Exit codes: 0 ok, 2 bad input (every problem on stderr, no traceback), 1 internal error.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from llmsim.errors import InputError

COMMANDS = ["run", "validate", "roofline", "catalog", "trace", "calibrate", "validate_cost",
            "sweep", "plan"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors are bad input too: exit 2
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llmsim", description="Discrete-event simulator of LLM serving clusters")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"llmsim.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"llmsim.commands.{name}":
                continue  # command not shipped in this build
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(exc.format(), file=sys.stderr)
        return 2
    except AssertionError as exc:   # InvariantError and friends: a bug in llmsim, exit 1
        print(f"internal error (please report): {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:   # output piped into e.g. `head`: stop quietly
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
