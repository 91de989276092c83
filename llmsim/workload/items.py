"""The internal record that flows from readers/generators through transforms to the Workload.

An *item* is a plain tuple ``(t, prompt, output, hash_ids, session_id, extra, flags)``:
arrival time in seconds (``None`` while a lengths-only row has no time yet), prompt tokens,
output tokens, hash ids (list or ``None``), session id (or ``None``), extra dict (or ``None``),
and a bit mask saying which length limits touched this request (counted by the Workload when the
request is yielded, so counts refer to requests actually produced).
"""
from __future__ import annotations

T, PROMPT, OUTPUT, HASH_IDS, SESSION, EXTRA, FLAGS = range(7)

CAP_PROMPT = 1      # trace cap max_prompt_tokens clipped the prompt
CAP_OUTPUT = 2      # trace cap max_output_tokens clipped the output
TRUNC_PROMPT = 4    # synthetic prompt draw was outside [min, max] (clipped or redrawn)
TRUNC_OUTPUT = 8    # synthetic output draw was outside [min, max]

FLAG_COUNTERS = (
    (CAP_PROMPT, "capped_prompt_requests"),
    (CAP_OUTPUT, "capped_output_requests"),
    (TRUNC_PROMPT, "truncated_prompt_requests"),
    (TRUNC_OUTPUT, "truncated_output_requests"),
)
