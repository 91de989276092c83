"""Hot-path recording: finished requests, the exact ITL sample and per-replica timelines.

Contract: appends only (O(1) per call, no pandas) while the simulation runs; ``to_frames``
builds the DataFrames once at the end. The ITL sample is weighted: ``add(gap_s, count)`` means
``count`` tokens each had an inter-token gap of ``gap_s`` (one decode step adds one entry per
group of requests that share the time of their previous token).
"""
from __future__ import annotations

from array import array

import numpy as np
import pandas as pd

REQUEST_COLUMNS = ["request_id", "arrival_s", "first_scheduled_s", "first_token_s", "finish_s",
                   "num_prompt_tokens", "num_output_tokens", "num_cached_tokens",
                   "num_preemptions", "pool", "replica", "status", "reason"]

TIMELINE_COLUMNS = ["time_s", "pool", "replica", "num_waiting", "num_running", "kv_usage",
                    "num_finished", "tokens_out"]


class ItlRecorder:
    __slots__ = ("gaps_s", "counts")

    def __init__(self):
        self.gaps_s = array("d")
        self.counts = array("q")

    def add(self, gap_s: float, count: int) -> None:
        self.gaps_s.append(gap_s)
        self.counts.append(count)

    def arrays(self):
        return (np.frombuffer(self.gaps_s, dtype=np.float64).copy() if len(self.gaps_s)
                else np.zeros(0), np.frombuffer(self.counts, dtype=np.int64).copy()
                if len(self.counts) else np.zeros(0, dtype=np.int64))


def _nan(x):
    return np.nan if x is None else x


class Recorder:
    """Collects ended requests (finished, rejected, failed) and timeline samples."""

    def __init__(self, with_tenant: bool = False):
        self.ended: list = []
        self.itl = ItlRecorder()
        self.timeline: list = []
        self.with_tenant = with_tenant

    def request_ended(self, req) -> None:
        self.ended.append(req)

    def sample(self, row: tuple) -> None:
        self.timeline.append(row)

    def requests_frame(self, extra_requests=()) -> pd.DataFrame:
        """One row per request (ended + ``extra_requests`` such as unfinished ones), sorted by
        request_id."""
        reqs = self.ended + list(extra_requests)
        cols = {
            "request_id": [r.request_id for r in reqs],
            "arrival_s": np.array([r.arrival_s for r in reqs], dtype=float),
            "first_scheduled_s": np.array([_nan(r.first_scheduled_s) for r in reqs], dtype=float),
            "first_token_s": np.array([_nan(r.first_token_s) for r in reqs], dtype=float),
            "finish_s": np.array([_nan(r.finish_s) for r in reqs], dtype=float),
            "num_prompt_tokens": np.array([r.num_prompt_tokens for r in reqs], dtype=np.int64),
            "num_output_tokens": np.array([r.num_output_tokens for r in reqs], dtype=np.int64),
            "num_cached_tokens": np.array([r.num_cached_tokens for r in reqs], dtype=np.int64),
            "num_preemptions": np.array([r.num_preemptions for r in reqs], dtype=np.int64),
            "pool": [r.pool for r in reqs],
            "replica": [r.replica for r in reqs],
            "status": [r.status for r in reqs],
            "reason": [r.reason for r in reqs],
        }
        if self.with_tenant:
            cols["tenant"] = [r.tenant for r in reqs]
        df = pd.DataFrame(cols)
        if len(df):
            df = df.sort_values("request_id", kind="stable").reset_index(drop=True)
        return df

    def timeline_frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.timeline, columns=TIMELINE_COLUMNS)
        if len(df):
            df = df.sort_values(["time_s", "pool", "replica"], kind="stable").reset_index(drop=True)
        return df
