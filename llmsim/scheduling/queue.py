"""Waiting queues in scheduling-policy order (plain Python).

``fcfs``: arrival order; preempted requests go back to the head (vLLM).
``priority``: lower ``Request.priority`` value first, then arrival (vLLM's priority policy).
``sjf``: shortest job first by a length key the scheduler supplies (prompt length, or a
predicted output length); ties by arrival.
"""
from __future__ import annotations

import heapq
from collections import deque


class FcfsQueue(deque):
    """Arrival order: ``push`` appends, ``push_front`` puts a preempted request back at the
    head, ``peek``/``pop`` take from the head. A deque (truthiness and length in C: the engine
    asks them every step)."""

    __slots__ = ()
    push = deque.append
    push_front = deque.appendleft
    pop = deque.popleft

    def peek(self):
        return self[0]


class KeyedQueue:
    """Min-heap by ``key(req)``, ties broken by insertion sequence (stable, deterministic)."""

    __slots__ = ("_h", "_key", "_seq")

    def __init__(self, key):
        self._h = []
        self._key = key
        self._seq = 0

    def push(self, req) -> None:
        self._seq += 1
        heapq.heappush(self._h, (self._key(req), self._seq, req))

    push_front = push  # a preempted request keeps its place by key

    def peek(self):
        return self._h[0][2]

    def pop(self):
        return heapq.heappop(self._h)[2]

    def __len__(self) -> int:
        return len(self._h)

    def __bool__(self) -> bool:
        return bool(self._h)

    def __iter__(self):
        return (e[2] for e in sorted(self._h))


def make_queue(policy: str, length_key=None):
    if policy == "fcfs":
        return FcfsQueue()
    if policy == "priority":
        return KeyedQueue(lambda r: (r.priority, r.arrival_s))
    if policy == "sjf":
        key = length_key or (lambda r: r.num_prompt_tokens)
        return KeyedQueue(lambda r: (key(r), r.arrival_s))
    raise ValueError(f"unknown scheduling policy {policy!r}")
