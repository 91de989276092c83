"""Collective and point-to-point communication times against hand calculation."""
from __future__ import annotations

import pytest

from llmsim.cost import comm
from llmsim.hardware.spec import Efficiency, LinkSpec

EFF = Efficiency(comm_bw_eff=0.5, comm_latency_s=8e-6)
NVLINK = LinkSpec("nvlink", 100e9, 1e-6)
WAN = LinkSpec("ethernet", 1e8, 50e-3)


def test_ring_allreduce():
    # 2(n-1)/n * bytes / (bw * eff) + 2(n-1) * max(comm_latency, link latency)
    assert comm.allreduce_time_s(1e6, 4, NVLINK, EFF) == pytest.approx(
        1.5 * 1e6 / 50e9 + 6 * 8e-6, rel=1e-12)
    assert comm.allreduce_time_s(1e6, 1, NVLINK, EFF) == 0.0


def test_send_uses_the_slower_of_link_and_software_latency():
    assert comm.send_time_s(1e6, NVLINK, EFF) == pytest.approx(1e6 / 50e9 + 8e-6, rel=1e-12)
    assert comm.send_time_s(1e6, WAN, EFF) == pytest.approx(1e6 / 5e7 + 50e-3, rel=1e-12)
    assert comm.send_time_s(0, WAN, EFF) == 0.0


def test_alltoall_and_allgather():
    assert comm.alltoall_time_s(8e6, 8, NVLINK, EFF) == pytest.approx(
        7 / 8 * 8e6 / 50e9 + 7 * 8e-6, rel=1e-12)
    assert comm.allgather_time_s(8e6, 2, NVLINK, EFF) == pytest.approx(
        0.5 * 8e6 / 50e9 + 8e-6, rel=1e-12)


@pytest.mark.parametrize("fn, coeffs", [
    (lambda b: comm.allreduce_time_s(b, 8, NVLINK, EFF), comm.allreduce_coeffs(8, NVLINK, EFF)),
    (lambda b: comm.alltoall_time_s(b, 4, NVLINK, EFF), comm.alltoall_coeffs(4, NVLINK, EFF)),
    (lambda b: comm.send_time_s(b, WAN, EFF), comm.send_coeffs(WAN, EFF)),
])
def test_times_are_affine_in_bytes_with_published_coefficients(fn, coeffs):
    t0, s = coeffs
    for b in (1.0, 1e3, 7e8):
        assert fn(b) == pytest.approx(t0 + s * b, rel=1e-12)


def test_bad_sizes_raise():
    with pytest.raises(ValueError):
        comm.allreduce_time_s(-1, 2, NVLINK)
    with pytest.raises(ValueError):
        comm.allreduce_time_s(1, 0, NVLINK)
