"""Collective and point-to-point communication times over one link type.

Plain functions of (bytes, participants, link, efficiency), reused by the roofline cost model
(tensor-parallel all-reduces, pipeline sends, expert-parallel all-to-all), the network layer and
calibration. All sizes in bytes, times in seconds.

Model (alpha-beta):

- bandwidth term: bytes on the wire / (``link.bandwidth_bytes_per_s`` · ``eff.comm_bw_eff``);
  point-to-point sends use ``eff.p2p_bw_eff`` when set (a copy engine transfer reaches more of
  the link than a ring collective);
  link bandwidths are per GPU per direction (see :class:`~llmsim.hardware.spec.LinkSpec`);
- latency term: one *hop latency* per communication round, where
  ``hop_latency_s = max(eff.comm_latency_s, link.latency_s)``: ``comm_latency_s`` is the
  software floor of one round (NCCL kernel step, synchronization), and a link whose own latency
  is longer (a cross-region WAN hop) dominates it;
- collectives (all-reduce, all-gather, all-to-all, not point-to-point sends) also pay
  ``eff.comm_base_latency_s`` once: the fixed cost of launching and synchronizing an NCCL
  collective, which measured small all-reduces show to dominate the per-hop term inside a node.

Each ``*_time_s`` function is ``t0 + s_per_byte · num_bytes`` with the ``(t0, s_per_byte)`` of
the matching ``*_coeffs`` function (the cost model folds these into per-token coefficients), is
0.0 when nobody else takes part (``n == 1``; a send of 0 bytes is also 0.0), and raises
``ValueError`` for negative sizes or participants < 1 (callers validate user input earlier).
"""
from __future__ import annotations

from llmsim.hardware.spec import Efficiency, LinkSpec

_DEFAULT_EFF = Efficiency()


def hop_latency_s(link: LinkSpec, eff: Efficiency | None = None) -> float:
    """Latency of one communication round over ``link``: max(software floor, link latency)."""
    eff = eff or _DEFAULT_EFF
    return max(eff.comm_latency_s, link.latency_s)


def _s_per_byte(link: LinkSpec, eff: Efficiency) -> float:
    return 1.0 / (link.bandwidth_bytes_per_s * eff.comm_bw_eff)


def _check_n(n: int) -> None:
    if n < 1:
        raise ValueError(f"participants must be >= 1 (got {n})")


def _check_bytes(num_bytes: float) -> None:
    if num_bytes < 0:
        raise ValueError(f"num_bytes must be >= 0 (got {num_bytes})")


def allreduce_coeffs(n: int, link: LinkSpec, eff: Efficiency | None = None) -> tuple[float, float]:
    """(t0_s, s_per_byte) of a ring all-reduce over ``n`` GPUs:
    t0 = comm_base_latency_s + 2(n-1) · hop_latency_s,
    s_per_byte = 2(n-1)/n / (bw · comm_bw_eff)."""
    _check_n(n)
    if n == 1:
        return 0.0, 0.0
    eff = eff or _DEFAULT_EFF
    return (eff.comm_base_latency_s + 2.0 * (n - 1) * hop_latency_s(link, eff),
            2.0 * (n - 1) / n * _s_per_byte(link, eff))


def allreduce_time_s(num_bytes: float, n: int, link: LinkSpec,
                     eff: Efficiency | None = None) -> float:
    """Ring all-reduce of a ``num_bytes`` buffer held by each of ``n`` GPUs
    (reduce-scatter then all-gather, n-1 rounds each):
    ``2(n-1)/n · bytes / (bw · comm_bw_eff) + comm_base_latency_s + 2(n-1) · hop_latency_s``."""
    _check_bytes(num_bytes)
    t0, s = allreduce_coeffs(n, link, eff)
    return t0 + s * num_bytes


def allgather_coeffs(n: int, link: LinkSpec, eff: Efficiency | None = None) -> tuple[float, float]:
    """(t0_s, s_per_byte) of a ring all-gather over ``n`` GPUs:
    t0 = comm_base_latency_s + (n-1) · hop_latency_s,
    s_per_byte = (n-1)/n / (bw · comm_bw_eff)."""
    _check_n(n)
    if n == 1:
        return 0.0, 0.0
    eff = eff or _DEFAULT_EFF
    return (eff.comm_base_latency_s + (n - 1) * hop_latency_s(link, eff),
            (n - 1) / n * _s_per_byte(link, eff))


def allgather_time_s(num_bytes: float, n: int, link: LinkSpec,
                     eff: Efficiency | None = None) -> float:
    """Ring all-gather producing a ``num_bytes`` buffer on each GPU (each contributes
    ``num_bytes / n``): ``(n-1)/n · bytes / (bw · eff) + comm_base_latency_s +
    (n-1) · hop_latency_s``."""
    _check_bytes(num_bytes)
    t0, s = allgather_coeffs(n, link, eff)
    return t0 + s * num_bytes


def send_coeffs(link: LinkSpec, eff: Efficiency | None = None) -> tuple[float, float]:
    """(t0_s, s_per_byte) of a point-to-point send: t0 = hop_latency_s,
    s_per_byte = 1 / (bw · p2p_bw_eff) (``p2p_bw_eff`` falls back to ``comm_bw_eff``)."""
    eff = eff or _DEFAULT_EFF
    frac = eff.p2p_bw_eff if eff.p2p_bw_eff is not None else eff.comm_bw_eff
    return hop_latency_s(link, eff), 1.0 / (link.bandwidth_bytes_per_s * frac)


def send_time_s(num_bytes: float, link: LinkSpec, eff: Efficiency | None = None) -> float:
    """Point-to-point transfer of ``num_bytes`` over ``link`` (pipeline activations, KV-cache
    migration): ``bytes / (bw · p2p_bw_eff) + hop_latency_s``; a send of 0 bytes costs 0."""
    _check_bytes(num_bytes)
    if num_bytes == 0:
        return 0.0
    t0, s = send_coeffs(link, eff)
    return t0 + s * num_bytes


def alltoall_coeffs(n: int, link: LinkSpec, eff: Efficiency | None = None) -> tuple[float, float]:
    """(t0_s, s_per_byte) of a pairwise all-to-all over ``n`` GPUs, per byte of each GPU's
    buffer: t0 = comm_base_latency_s + (n-1) · hop_latency_s,
    s_per_byte = (n-1)/n / (bw · comm_bw_eff)."""
    _check_n(n)
    if n == 1:
        return 0.0, 0.0
    eff = eff or _DEFAULT_EFF
    return (eff.comm_base_latency_s + (n - 1) * hop_latency_s(link, eff),
            (n - 1) / n * _s_per_byte(link, eff))


def alltoall_time_s(num_bytes_per_gpu: float, n: int, link: LinkSpec,
                    eff: Efficiency | None = None) -> float:
    """All-to-all where each of ``n`` GPUs holds ``num_bytes_per_gpu`` spread evenly over all
    ranks (itself included), e.g. MoE token dispatch or combine under expert parallelism: each
    GPU sends ``(n-1)/n`` of its buffer in ``n-1`` pairwise rounds:
    ``(n-1)/n · bytes / (bw · eff) + comm_base_latency_s + (n-1) · hop_latency_s``."""
    _check_bytes(num_bytes_per_gpu)
    t0, s = alltoall_coeffs(n, link, eff)
    return t0 + s * num_bytes_per_gpu
