"""Parsing helpers shared by the subcommands: flag values that are bad input raise
:class:`~llmsim.errors.InputError` naming the flag (exit 2)."""
from __future__ import annotations

from llmsim.errors import InputError, input_problem


def int_arg(name: str, text, minimum: int = 1) -> int:
    """``text`` as an integer >= ``minimum``; ``name`` is the flag shown in the error."""
    try:
        v = int(str(text))
    except ValueError:
        raise InputError(input_problem(f"must be an integer >= {minimum}", where=name,
                                       value=text)) from None
    if v < minimum:
        raise InputError(input_problem(f"must be an integer >= {minimum}", where=name, value=v))
    return v
