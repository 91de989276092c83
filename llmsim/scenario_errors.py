"""Turn pydantic validation errors into :class:`~llmsim.errors.Problem` s with file lines.

Contract: :func:`schema_problems` maps every error of a ``ValidationError`` raised while
validating ``data`` against ``root`` to one Problem naming the file, the line of the offending
key (from :mod:`llmsim.yaml_lines`), the dotted key path, the value and what is allowed:
unknown keys get a close-match suggestion from the model's fields, literals list their allowed
values (plus a suggestion). Error locations are cleaned of pydantic's union/validator tags by
walking them alongside the input data. Paths set by ``--set`` are blamed on the override.
"""
from __future__ import annotations

import collections.abc
import re
import types
import typing

from pydantic import BaseModel, ValidationError

from llmsim.errors import Problem, close_matches, input_problem, suggest
from llmsim.yaml_lines import dotted, line_of

_TYPE_WORDS = {
    "int_type": "must be an integer", "int_parsing": "must be an integer",
    "int_from_float": "must be an integer", "float_type": "must be a number",
    "float_parsing": "must be a number", "bool_type": "must be true or false",
    "bool_parsing": "must be true or false", "string_type": "must be a string",
    "model_type": "must be a mapping of keys to values", "dict_type": "must be a mapping",
    "model_attributes_type": "must be a mapping of keys to values",
    "list_type": "must be a list", "tuple_type": "must be a list",
    "finite_number": "must be a finite number (not .inf or .nan)",
}


def schema_problems(exc: ValidationError, data, root: type[BaseModel], *, where: str | None,
                    lines: dict[tuple, int], override_where: dict[tuple, str] | None = None
                    ) -> list[Problem]:
    """One Problem per pydantic error (duplicates at the same path and message merged)."""
    out: list[Problem] = []
    seen: set[tuple] = set()
    errors = [(err, clean_loc(err["loc"], data, err["type"]))
              for err in exc.errors(include_url=False)]
    unknown = {}  # parent path → unknown keys written there
    for err, path in errors:
        if err["type"] == "extra_forbidden" and path:
            unknown.setdefault(path[:-1], []).append(str(path[-1]))
    for err, path in errors:
        if (err["type"] == "missing" and path
                and any(close_matches(u, [str(path[-1])]) for u in unknown.get(path[:-1], []))):
            continue  # a misspelt key: the unknown-key problem already suggests this one
        prob = _problem(err, path, data, root, where, lines, override_where or {})
        ident = (prob.key, prob.message)
        if ident in seen:
            continue
        seen.add(ident)
        out.append(prob)
    return out


def clean_loc(loc: tuple, data, err_type: str) -> tuple:
    """Drop pydantic's union/validator tags from ``loc`` by walking it through ``data``."""
    out: list = []
    cur = data
    for i, el in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(cur, dict) and el in cur:
            out.append(el)
            cur = cur[el]
        elif isinstance(cur, list) and isinstance(el, int) and 0 <= el < len(cur):
            out.append(el)
            cur = cur[el]
        elif last and err_type in ("missing", "extra_forbidden") and isinstance(cur, dict):
            out.append(el)
        # else: a tag such as 'literal[...]', 'function-after[...]' or a union member name
    return tuple(out)


def blame(path: tuple, *, where: str | None, lines: dict[tuple, int],
          override_where: dict[tuple, str]) -> tuple[str | None, int | None]:
    """(where, line) for ``path``: the ``--set`` that wrote it (or an ancestor), else the file
    line of the path or of its nearest ancestor in the file."""
    for n in range(len(path), 0, -1):
        if path[:n] in override_where:
            return override_where[path[:n]], None
    return where, line_of(lines, path) if lines else None


def _problem(err: dict, path: tuple, data, root, where, lines, override_where) -> Problem:
    etype = err["type"]
    src, line = blame(path, where=where, lines=lines, override_where=override_where)
    key = dotted(path) or None
    value = err.get("input")
    if etype == "extra_forbidden":
        name = str(path[-1]) if path else str(err["loc"][-1])
        fields = _fields_at(root, path[:-1])
        msg = f"unknown key '{name}'."
        hint = suggest(name, fields)
        if hint:
            msg += hint
        elif fields:
            msg += " Allowed keys here: " + ", ".join(sorted(fields)) + "."
        return input_problem(msg, where=src, line=line, key=key)
    if etype == "missing":
        return input_problem("required key is missing", where=src, line=line, key=key)
    if etype == "literal_error":
        allowed = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        msg = "must be one of " + ", ".join(repr(a) for a in allowed) if allowed else err["msg"]
        hint = suggest(value, allowed) if isinstance(value, str) and allowed else ""
        if hint:
            msg += "." + hint
        return input_problem(msg, where=src, line=line, key=key, value=value)
    ctx = err.get("ctx") or {}
    if etype == "too_short" and "min_length" in ctx:
        msg = f"must have at least {ctx['min_length']} item(s)"
    elif etype == "too_long" and "max_length" in ctx:
        msg = f"must have at most {ctx['max_length']} item(s)"
    elif etype == "string_too_short":
        msg = "must not be empty"
    else:
        msg = _TYPE_WORDS.get(etype) or _rephrase(err["msg"])
    if _is_scalar(value):
        return input_problem(msg, where=src, line=line, key=key, value=value)
    return input_problem(msg, where=src, line=line, key=key)


def _rephrase(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg.replace("Input should be", "must be")


def _is_scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


# ---------------------------------------------------------------- model introspection
def _flatten(ann) -> list:
    """Members of Optional/Union/Annotated, recursively."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _flatten(typing.get_args(ann)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for a in typing.get_args(ann) for m in _flatten(a)]
    return [ann]


def _is_model(t) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _fields_at(root: type[BaseModel], path: tuple) -> list[str]:
    """Field names of the model(s) found at ``path`` under ``root`` (union members merged)."""
    current = [root]
    for el in path:
        nxt = []
        for ann in current:
            for t in _flatten(ann):
                origin = typing.get_origin(t)
                if _is_model(t) and isinstance(el, str) and el in t.model_fields:
                    nxt.append(t.model_fields[el].annotation)
                elif origin in (list, tuple, collections.abc.Sequence) and isinstance(el, int):
                    args = typing.get_args(t)
                    if args:
                        nxt.append(args[0])
                elif origin is dict:
                    args = typing.get_args(t)
                    if len(args) == 2:
                        nxt.append(args[1])
        current = nxt
    names: list[str] = []
    for ann in current:
        for t in _flatten(ann):
            if _is_model(t):
                names.extend(n for n in t.model_fields if n not in names)
    return names
