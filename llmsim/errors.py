"""Error types shared by every layer.

Contract: anything caused by the user's input (scenario, trace, CLI flags, model/hardware names,
plans that do not fit) raises :class:`InputError`, which carries one :class:`Problem` per defect.
The CLI prints every problem on stderr and exits with code 2. Any other exception is a bug in
llmsim (exit code 1).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Problem:
    """One defect in the user's input.

    ``where`` is a file path (or a source name such as ``--set`` or ``--model``), ``line`` the
    1-based line/row when known, ``key`` the dotted key path or column, ``value`` the offending
    value (repr'd), ``message`` what is wrong and what is allowed.
    """

    message: str
    where: str | None = None
    line: int | None = None
    key: str | None = None
    value: object = None
    has_value: bool = False

    def format(self) -> str:
        loc = self.where or "<input>"
        if self.line is not None:
            loc += f":{self.line}"
        parts = [loc]
        if self.key:
            parts.append(f"key '{self.key}'")
        head = ": ".join(parts)
        val = f" (got {self.value!r})" if self.has_value else ""
        return f"{head}: {self.message}{val}"


class InputError(Exception):
    """Bad user input: one or more :class:`Problem`. Maps to exit code 2."""

    def __init__(self, problems: Problem | str | Sequence[Problem], **kw):
        if isinstance(problems, str):
            problems = [Problem(problems, **kw)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        # args holds the problems themselves, so that code re-raising an exception as
        # ``type(exc)(*exc.args)`` (SimPy does, for a failed process) keeps the structure
        super().__init__(self.problems)

    def __str__(self) -> str:
        return "\n".join(p.format() for p in self.problems)

    def format(self) -> str:
        n = len(self.problems)
        head = "error: " if n == 1 else f"error: {n} problems:\n  "
        return head + "\n  ".join(p.format() for p in self.problems)


def input_problem(message: str, *, where=None, line=None, key=None, value=..., ) -> Problem:
    """Build a Problem; pass ``value`` to have it shown as ``(got ...)``."""
    if value is ...:
        return Problem(message, where, line, key)
    return Problem(message, where, line, key, value, True)


def close_matches(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Close spellings of ``word`` among ``choices`` (case-insensitive)."""
    choices = list(choices)
    lower = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(word.lower(), list(lower), n=n, cutoff=0.5)
    return [lower[h] for h in hits]


def suggest(word: str, choices: Iterable[str]) -> str:
    """' Did you mean X?' text, or '' when nothing is close."""
    hits = close_matches(word, choices)
    if not hits:
        return ""
    return " Did you mean " + " or ".join(repr(h) for h in hits) + "?"
