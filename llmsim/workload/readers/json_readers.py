"""JSON trace readers.

``mooncake`` — JSONL: ``timestamp`` (ms from the start), ``input_length``, ``output_length``,
``hash_ids`` (one id per 512-token prompt block, ceil(input_length / 512) of them; a list of
floor(input_length / 512) — full blocks only — is accepted too). Requests keep the ids with
``hash_block_tokens`` = 512.

``sharegpt`` — a JSON array or JSONL. Each record is one conversation, in one of three shapes:

1. flat request: ``{"prompt_tokens": P, "output_tokens": O}`` (aliases: ``input_len``,
   ``prompt_len``, ``input_length``, ``input_tokens``, ``num_prompt_tokens`` /
   ``output_len``, ``output_length``, ``completion_tokens``, ``num_output_tokens``);
2. turns: ``{"turns": [{"prompt_tokens": ..., "output_tokens": ...}, ...]}`` where each turn's
   prompt counts only the NEW user tokens;
3. messages (ShareGPT): ``{"conversations": [{"from": "human", "value": "...", "num_tokens": N},
   {"from": "gpt", ...}, ...]}`` (also ``messages`` with ``role``/``content``; roles
   human/user, gpt/assistant/chatgpt/bard/bing/model, system). Token counts come from
   ``num_tokens``/``tokens``/``token_count``, or — only with ``chars_per_token`` set — from the
   text length (an estimate).

For shapes 2 and 3 a turn's prompt is the whole history (system + earlier user and assistant
messages) plus the new user message; the output is the assistant reply. A trailing user message
without a reply is not a request. A conversation with no complete exchange, or an exchange with
a reply of 0 tokens, is a bad row. ``id``/``conversation_id`` becomes the session id (else the
record's index). ``turns: first`` keeps each conversation's first exchange only.
"""
from __future__ import annotations

from llmsim.workload.readers.base import BadRow, TraceReader, open_text, parse_tokens
from llmsim.workload.readers.jsonio import iter_records
from llmsim.workload.readers.rows import mooncake_rows
from llmsim.workload.sessions import BlockIds

PROMPT_KEYS = ("prompt_tokens", "input_len", "prompt_len", "input_length", "input_tokens",
               "num_prompt_tokens")
OUTPUT_KEYS = ("output_tokens", "output_len", "output_length", "completion_tokens",
               "num_output_tokens")
LIST_KEYS = ("conversations", "conversation", "messages", "turns")
USER_ROLES = {"human", "user"}
ASSISTANT_ROLES = {"gpt", "assistant", "chatgpt", "bard", "bing", "model"}
SYSTEM_ROLES = {"system"}
COUNT_KEYS = ("num_tokens", "tokens", "token_count")
TEXT_KEYS = ("value", "content", "text")


class MooncakeReader(TraceReader):
    format = "mooncake"

    def __init__(self, path, hash_block_tokens: int = 512, **kw):
        super().__init__(path, **kw)
        self.hash_block_tokens = hash_block_tokens

    def _check_header(self):
        with open_text(self.path) as f:
            for line, obj in iter_records(f):
                if isinstance(obj, Exception):
                    raise self.header_error(f"not JSONL ({obj})")
                if not isinstance(obj, dict):
                    raise self.header_error("a Mooncake record must be a JSON object")
                missing = [k for k in ("timestamp", "input_length", "output_length") if k not in obj]
                if missing:
                    raise self.header_error(f"first record lacks {missing} needed by format "
                                            "'mooncake'", value=sorted(obj))
                return
        raise self.header_error("trace file is empty")

    def _rows(self):
        # the loop per row runs compiled in the compiled build (readers/rows.py)
        return mooncake_rows(self)


def _first_key(d: dict, keys):
    for k in keys:
        if k in d:
            return k
    return None


def _count_key(d: dict, keys, where: str = ""):
    """``_first_key``; BadRow when another of ``keys`` (aliases) holds a different value: one
    of the two would be dropped without a word."""
    k = _first_key(d, keys)
    if k is not None:
        for other in keys[keys.index(k) + 1:]:
            if other in d and d[other] != d[k]:
                raise BadRow(f"{where}{other}", d[other], f"'{k}' and '{other}' both give this "
                             f"count, with different values ({d[k]!r} and {d[other]!r})")
    return k


class ShareGPTReader(TraceReader):
    """Yields sessions ``(session_id, turns)``; each turn an item with ``t = None``."""

    format = "sharegpt"
    has_timestamps = False
    yields_sessions = True

    def __init__(self, path, turns: str = "first", chars_per_token: float | None = None,
                 hash_block_tokens: int = 16, **kw):
        super().__init__(path, **kw)
        self.turns_mode = turns
        self.chars_per_token = chars_per_token
        self.hash_block_tokens = hash_block_tokens if turns == "all" else 0

    def _check_header(self):
        with open_text(self.path) as f:
            try:
                for line, obj in iter_records(f):
                    if isinstance(obj, Exception):
                        raise self.header_error(f"not JSON/JSONL ({obj})")
                    if not isinstance(obj, dict) or (
                            _first_key(obj, PROMPT_KEYS) is None and _first_key(obj, LIST_KEYS) is None):
                        raise self.header_error(
                            "first record is neither a request with token counts "
                            f"({PROMPT_KEYS[0]}/{OUTPUT_KEYS[0]}) nor a conversation "
                            f"({'/'.join(LIST_KEYS)})",
                            value=sorted(obj) if isinstance(obj, dict) else type(obj).__name__)
                    return
            except ValueError as exc:
                raise self.header_error(f"not a JSON array or JSONL file ({exc})") from None
        raise self.header_error("trace file is empty")

    # ----------------------------------------------------------------------------------
    def _count(self, msg: dict, where: str) -> int:
        k = _count_key(msg, COUNT_KEYS, f"{where}.")
        if k is not None:
            return parse_tokens(msg[k], f"{where}.{k}", allow_zero=True)
        tk = _first_key(msg, TEXT_KEYS)
        if tk is None:
            raise BadRow(where, None, "message has neither a token count "
                         f"({'/'.join(COUNT_KEYS)}) nor text")
        if self.chars_per_token is None:
            raise BadRow(f"{where}.num_tokens", None, "message has text but no token count; add "
                         "num_tokens to each message or set chars_per_token to estimate from text")
        text = msg[tk]
        if not isinstance(text, str):
            raise BadRow(f"{where}.{tk}", text, "message text must be a string")
        return round(len(text) / self.chars_per_token)

    def _exchanges(self, obj: dict) -> list[tuple[int, int, int]]:
        """[(history_tokens, new_user_tokens, output_tokens), ...] of one record."""
        pk = _count_key(obj, PROMPT_KEYS)
        if pk is not None:
            ok = _count_key(obj, OUTPUT_KEYS)
            if ok is None:
                raise BadRow(OUTPUT_KEYS[0], None, f"record has '{pk}' but no output token count")
            return [(0, parse_tokens(obj[pk], pk), parse_tokens(obj[ok], ok))]
        lk = _first_key(obj, LIST_KEYS)
        if lk is None:
            raise BadRow(LIST_KEYS[0], None, "record has no token counts and no conversation list")
        msgs = obj[lk]
        if not isinstance(msgs, list):
            raise BadRow(lk, type(msgs).__name__, "conversation must be a list")
        out = []
        hist = 0
        pending_user = 0
        have_user = False
        for i, m in enumerate(msgs):
            where = f"{lk}[{i}]"
            if not isinstance(m, dict):
                raise BadRow(where, m, "conversation entries must be objects")
            tpk = _count_key(m, PROMPT_KEYS, f"{where}.")
            if tpk is not None:            # turn-style entry
                tok = _count_key(m, OUTPUT_KEYS, f"{where}.")
                if tok is None:
                    raise BadRow(where, None, "turn has a prompt token count but no output count")
                u = parse_tokens(m[tpk], f"{where}.{tpk}")
                o = parse_tokens(m[tok], f"{where}.{tok}")
                out.append((hist, u, o))
                hist += u + o
                continue
            role = m.get("from", m.get("role"))
            if "from" in m and "role" in m and m["role"] != role:
                raise BadRow(f"{where}.role", m["role"], f"'from' and 'role' disagree "
                             f"({role!r} and {m['role']!r})")
            if not isinstance(role, str):
                raise BadRow(f"{where}.from", role, "role must be a string (human/user, "
                             "gpt/assistant, system)")
            n = self._count(m, where)
            if role in SYSTEM_ROLES:
                hist += n
            elif role in USER_ROLES:
                pending_user += n
                have_user = True
            elif role in ASSISTANT_ROLES:
                if not have_user:
                    hist += n              # assistant speaks first (greeting): part of history
                    continue
                if n < 1:
                    raise BadRow(f"{where}", 0, "assistant reply has 0 tokens")
                if hist + pending_user < 1:
                    raise BadRow(f"{where}", 0, "prompt has 0 tokens")
                out.append((hist, pending_user, n))
                hist += pending_user + n
                pending_user = 0
                have_user = False
            else:
                raise BadRow(f"{where}.from", role, "unknown role (allowed: human/user, gpt/"
                             "assistant, system)")
        if not out:
            raise BadRow(lk, None, "conversation has no complete user → assistant exchange")
        return out

    def _rows(self):
        counts = self.counts
        B = self.hash_block_tokens
        all_turns = self.turns_mode == "all"
        ids = BlockIds(B) if all_turns else None
        with open_text(self.path) as f:
            try:
                for index, (line, obj) in enumerate(iter_records(f)):
                    counts["rows_read"] += 1
                    try:
                        if isinstance(obj, Exception):
                            raise BadRow(None, None, f"line is not valid JSON ({obj})")
                        if not isinstance(obj, dict):
                            raise BadRow(None, type(obj).__name__, "record is not a JSON object")
                        ex = self._exchanges(obj)
                    except BadRow as exc:
                        self.bad(line, exc)
                        continue
                    sid = obj.get("id", obj.get("conversation_id", index))
                    if not all_turns:
                        h, u, o = ex[0]
                        yield sid, [(None, h + u, o, None, sid, None, 0)]
                        continue
                    total = sum(h + u + o for h, u, o in ex[-1:])
                    base = ids.new_session(total)
                    yield sid, [(None, h + u, o, ids.prompt_ids(base, h + u), sid, None, 0)
                                for h, u, o in ex]
            except ValueError as exc:      # broken JSON array: cannot resynchronise
                from llmsim.errors import InputError, input_problem
                raise InputError(input_problem(str(exc), where=self.where)) from None
