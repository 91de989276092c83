"""Regenerate the small synthetic traces in this directory (deterministic: fixed seeds).

    python traces/generate.py            # writes next to this file
    python traces/generate.py --out DIR  # elsewhere

Every file is produced by llmsim's own workload generator (``build_workload``) and written in
one of the public trace formats the readers understand, so examples and tests can exercise each
reader without the real (large, separately licensed) traces. See README.md for what each file
holds.
"""
from __future__ import annotations

import argparse
import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from llmsim.workload import WorkloadConfig, build_workload

HERE = Path(__file__).resolve().parent
SEED = 20240601


def _requests(workload: dict, seed: int):
    cfg = WorkloadConfig.model_validate(workload)
    return list(build_workload(cfg, np.random.SeedSequence(seed), HERE))


def _stamp(t0: datetime, t: float) -> str:
    s = (t0 + timedelta(seconds=t)).isoformat(sep=" ", timespec="microseconds")
    return s


def chat_azure2023(out: Path):
    """Azure-2023 format: 2,000 chat-like requests, Poisson 5 req/s, lognormal lengths."""
    reqs = _requests({"num_requests": 2000,
                      "arrival": {"process": "poisson", "rate_per_s": 5.0},
                      "prompt_tokens": {"dist": "lognormal", "mean": 1000, "sigma": 0.9, "max": 16000},
                      "output_tokens": {"dist": "lognormal", "mean": 220, "sigma": 0.8, "max": 2000}},
                     SEED + 1)
    t0 = datetime(2024, 1, 15, 9, 0, 0)
    with open(out / "synthetic_chat_azure2023.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["TIMESTAMP", "ContextTokens", "GeneratedTokens"])
        for r in reqs:
            w.writerow([_stamp(t0, r.arrival_s), r.num_prompt_tokens, r.max_tokens])


def code_azure2024(out: Path):
    """Azure-2024 format (+00:00 timestamps): 1,000 bursty code requests, gamma CV 4, 2 req/s,
    long prompts and short outputs (correlated)."""
    reqs = _requests({"num_requests": 1000,
                      "arrival": {"process": "gamma", "rate_per_s": 2.0, "cv": 4.0},
                      "lengths": {"dist": "correlated", "correlation": 0.3,
                                  "prompt_tokens": {"dist": "lognormal", "mean": 2000, "sigma": 1.0,
                                                    "max": 7500},
                                  "output_tokens": {"dist": "lognormal", "mean": 28, "sigma": 1.0,
                                                    "max": 2000}}},
                     SEED + 2)
    t0 = datetime(2024, 5, 10, 0, 0, 0, tzinfo=timezone.utc)
    with open(out / "synthetic_code_azure2024.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["TIMESTAMP", "ContextTokens", "GeneratedTokens"])
        for r in reqs:
            w.writerow([_stamp(t0, r.arrival_s), r.num_prompt_tokens, r.max_tokens])


def sessions_mooncake(out: Path):
    """Mooncake JSONL: 1,000 requests of multi-turn sessions (0.5 sessions/s, 1–6 turns, 30 s
    think time, a 1,024-token shared system prompt) with 512-token-block hash ids."""
    reqs = _requests({"num_requests": 1000,
                      "arrival": {"process": "poisson", "rate_per_s": 0.5},
                      "prompt_tokens": {"dist": "lognormal", "mean": 400, "sigma": 0.8, "max": 4000},
                      "output_tokens": {"dist": "lognormal", "mean": 250, "sigma": 0.7, "max": 1500},
                      "sessions": {"turns": {"dist": "uniform", "min": 1, "max": 6},
                                   "think_time_s": 30.0, "shared_prefix_tokens": 1024,
                                   "hash_block_tokens": 512}},
                     SEED + 3)
    with open(out / "synthetic_sessions_mooncake.jsonl", "w") as f:
        for r in reqs:
            f.write(json.dumps({"timestamp": int(round(r.arrival_s * 1000)),
                                "input_length": r.num_prompt_tokens,
                                "output_length": r.max_tokens,
                                "hash_ids": r.hash_ids}) + "\n")


def burstgpt(out: Path):
    """BurstGPT format: 1,000 requests over two classes (ChatGPT conversation log 80 %, GPT-4
    API log 20 %), on/off bursts; about 3 % failed requests (Response tokens 0)."""
    wl = {"num_requests": 1000,
          "arrival": {"process": "on_off", "on_rate_per_s": 4.0, "off_rate_per_s": 0.5,
                      "on_s": 60, "off_s": 120},
          "sources": [
              {"name": "ChatGPT|Conversation log", "share": 0.8,
               "prompt_tokens": {"dist": "lognormal", "mean": 600, "sigma": 1.0, "max": 8000},
               "output_tokens": {"dist": "lognormal", "mean": 300, "sigma": 0.8, "max": 4000}},
              {"name": "GPT-4|API log", "share": 0.2,
               "prompt_tokens": {"dist": "lognormal", "mean": 1200, "sigma": 1.0, "max": 8000},
               "output_tokens": {"dist": "lognormal", "mean": 150, "sigma": 0.8, "max": 4000}}]}
    reqs = _requests(wl, SEED + 4)
    fail = np.random.default_rng(SEED + 40).random(len(reqs)) < 0.03
    with open(out / "synthetic_burstgpt.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens",
                    "Log Type"])
        for r, failed in zip(reqs, fail.tolist()):
            model, log = r.tenant.split("|")
            resp = 0 if failed else r.max_tokens
            w.writerow([int(r.arrival_s), model, r.num_prompt_tokens, resp,
                        r.num_prompt_tokens + resp, log])


def sharegpt(out: Path):
    """ShareGPT-style JSONL: 300 conversations (1–5 exchanges) with per-message token counts
    (``num_tokens``; no text)."""
    rng = np.random.default_rng(SEED + 5)
    with open(out / "synthetic_sharegpt.jsonl", "w") as f:
        for i in range(300):
            n = int(rng.integers(1, 6))
            msgs = []
            for _ in range(n):
                msgs.append({"from": "human", "num_tokens": int(max(1, rng.lognormal(4.5, 1.0)))})
                msgs.append({"from": "gpt", "num_tokens": int(max(1, rng.lognormal(5.3, 0.8)))})
            f.write(json.dumps({"id": f"conv{i:04d}", "conversations": msgs}) + "\n")


def lengths_only(out: Path):
    """Lengths-only CSV (Vidur's column names): 1,000 summarization-like requests, prompt and
    output lengths correlated (0.4), no timestamps."""
    reqs = _requests({"num_requests": 1000,
                      "arrival": {"process": "constant", "rate_per_s": 1.0},
                      "lengths": {"dist": "correlated", "correlation": 0.4,
                                  "prompt_tokens": {"dist": "normal", "mean": 2600, "std": 900,
                                                    "min": 16, "max": 4000},
                                  "output_tokens": {"dist": "lognormal", "mean": 250, "sigma": 0.7,
                                                    "max": 4000}}},
                     SEED + 6)
    with open(out / "synthetic_lengths.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["num_prefill_tokens", "num_decode_tokens"])
        for r in reqs:
            w.writerow([r.num_prompt_tokens, r.max_tokens])


GENERATORS = (chat_azure2023, code_azure2024, sessions_mooncake, burstgpt, sharegpt, lengths_only)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE))
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for g in GENERATORS:
        g(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
