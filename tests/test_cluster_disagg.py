"""Disaggregated prefill/decode: TTFT on the prefill side, the KV transfer delays the second
token, decode-side backpressure, macro-step equivalence."""
import copy

import numpy as np
import pandas as pd
import pytest

from llmsim.api import simulate
from macro_check import assert_macro_equals_single
from llmsim.cost.memory import kv_transfer_bytes
from llmsim.cost.types import BatchAggregates
from llmsim.engine.simulation import Simulation
from llmsim.scenario import load_scenario

PROMPT = 1000
OUT = 5


def disagg(n=1, rate=2.0, prompt=PROMPT, out=OUT, link=(8.0, 50.0), decode=None,
           prefill_replicas=1, decode_replicas=1, **extra):
    dec = {"name": "dec", "hardware": "h100-sxm", "replicas": decode_replicas,
           "role": "decode"}
    dec.update(decode or {})
    scn = {"name": "dis", "seed": 1, "model": "llama-3.1-8b",
           "cluster": {"router": "least_outstanding", "pools": [
               {"name": "pre", "hardware": "h100-sxm", "replicas": prefill_replicas,
                "role": "prefill"}, dec]},
           "workload": {"num_requests": n,
                        "arrival": {"process": "constant", "rate_per_s": rate},
                        "prompt_tokens": {"dist": "constant", "value": prompt},
                        "output_tokens": {"dist": "constant", "value": out}}}
    if link is not None:
        scn["cluster"]["network"] = {"links": [{"src": "pre", "dst": "dec",
                                                "bandwidth_gbps": link[0],
                                                "latency_ms": link[1]}]}
    scn.update(extra)
    return scn


def run(scn):
    sim = Simulation(load_scenario(scn), progress=False)
    out = sim.run()
    return sim, out


def test_ttft_is_the_prefill_and_the_transfer_delays_the_second_token():
    sim, out = run(disagg())
    req = out.requests.iloc[0]
    pre, dec = sim.pools
    model = sim.model
    t_prefill = pre.cost_model.step_time_s(BatchAggregates.from_pairs([(PROMPT, 0)]))
    nbytes = kv_transfer_bytes(model, pre.cfg.quant_config(), PROMPT)
    transfer = nbytes / (8.0e9 / 8) + 0.050          # idle explicit link: bytes/bw + latency
    decode = [dec.cost_model.step_time_s(BatchAggregates(decode_seqs=1, decode_ctx_sum=PROMPT + i,
                                                         num_sampled=1))
              for i in range(OUT - 1)]
    assert req.status == "finished" and req.pool == "dec"
    assert req.first_token_s - req.arrival_s == pytest.approx(t_prefill, rel=1e-9)
    assert req.finish_s == pytest.approx(req.first_token_s + transfer + sum(decode), rel=1e-9)
    # the first inter-token gap holds the transfer; the others are plain decode steps
    gaps = np.sort(np.repeat(out.itl_gaps_s, out.itl_weights))
    assert gaps[-1] == pytest.approx(transfer + decode[0], rel=1e-9)
    np.testing.assert_allclose(gaps[:-1], sorted(decode[1:]), rtol=1e-9)
    dec_out = next(p for p in out.pools if p["name"] == "dec")
    assert dec_out["kv_transfers_in"] == 1
    assert dec_out["kv_transfer_s_mean"] == pytest.approx(transfer, rel=1e-9)
    assert dec_out["kv_transfer_gb_in"] == pytest.approx(nbytes / 1e9)
    # the KV of the prompt is PROMPT x 2 x layers x kv_heads x head_dim x 2 bytes (bf16)
    assert nbytes == PROMPT * 2 * model.num_layers * model.num_kv_heads * model.head_dim * 2


def test_the_same_request_on_a_mixed_replica_has_the_same_ttft():
    scn = disagg()
    mixed = copy.deepcopy(scn)
    mixed["cluster"]["pools"] = [dict(scn["cluster"]["pools"][0], role="mixed")]
    mixed["cluster"].pop("network")
    a = simulate(scn).requests.iloc[0]
    b = simulate(mixed).requests.iloc[0]
    assert a.first_token_s == pytest.approx(b.first_token_s, rel=1e-12)
    assert a.finish_s - b.finish_s > 0.05     # the second token waited for the transfer


def test_transfer_time_grows_with_contention():
    # two prefill replicas finish identical prompts at the same instant and both send to the
    # one decode replica over the shared pool link: each gets half of it
    idle = run(disagg(n=1))[1]
    busy = run(disagg(n=2, rate=1e6, prefill_replicas=2, link=(8.0, 50.0)))[1]
    t_idle = next(p for p in idle.pools if p["name"] == "dec")["kv_transfer_s_mean"]
    t_busy = next(p for p in busy.pools if p["name"] == "dec")["kv_transfer_s_mean"]
    wire = t_idle - 0.050
    assert t_busy > t_idle
    # arrivals 1 us apart: both transfers overlap almost entirely -> about 2x the wire time
    assert t_busy == pytest.approx(2 * wire + 0.050, rel=1e-3)


def test_backpressure_one_decode_slot_serialises_decoding_and_loses_nothing():
    # the decode replica runs one sequence at a time: prefilled requests wait (their KV held
    # on the prefill side) until it has room; nothing is rejected or lost
    scn = disagg(n=6, rate=100.0, out=20, decode={"scheduler": {"max_num_seqs": 1}})
    sim, out = run(scn)
    df = out.requests.sort_values("first_token_s")
    assert (df.status == "finished").all() and len(df) == 6
    assert (df.num_output_tokens == 20).all()
    # each request starts decoding only after the previous one finished
    fin = df.finish_s.to_numpy()
    assert (np.diff(fin) > 0.05).all()
    dec = next(p for p in out.pools if p["name"] == "dec")
    assert dec["kv_wait_s_mean"] > 0.05
    # every block is back: the prefill side freed its KV once each transfer completed
    for r in sim.replicas:
        for ve in r.engines:
            kv = ve.scheduler.kv
            assert kv.num_free_blocks == kv.num_blocks


def test_requests_too_large_for_any_decode_pool_are_rejected_at_arrival():
    scn = disagg(n=2, decode={"memory": {"gpu_memory_utilization": 0.25}}, prompt=30000)
    res = simulate(scn)
    assert (res.requests.status == "rejected").all()
    assert res.requests.reason.str.contains("no decode pool can hold it").all()


def test_default_fabric_link_uses_the_cards_inter_node_link():
    from llmsim.cost import comm
    sim, out = run(disagg(link=None))
    pre = sim.pools[0]
    hw = pre.hardware
    nbytes = kv_transfer_bytes(sim.model, pre.cfg.quant_config(), PROMPT)
    t0, s = comm.send_coeffs(hw.inter_node, hw.efficiency)
    dec = next(p for p in out.pools if p["name"] == "dec")
    # one GPU per replica: the replica's port is that GPU's NIC
    assert dec["kv_transfer_s_mean"] == pytest.approx(t0 + s * nbytes, rel=1e-9)


def macro_scenario(name, seed, dec, num_requests, rate, prompt, output):
    """One prefill H100 and two decode replicas (``dec``: the decode pool's settings) over a
    25 Gb/s, 2 ms link; lognormal lengths ``(mean, sigma, max)``."""
    return {"name": name, "seed": seed, "model": "llama-3.1-8b",
            "cluster": {"router": "least_outstanding", "pools": [
                {"name": "pre", "hardware": "h100-sxm", "replicas": 1, "role": "prefill"},
                {"name": "dec", "replicas": 2, "role": "decode", **dec}],
                "network": {"links": [{"src": "pre", "dst": "dec", "bandwidth_gbps": 25,
                                       "latency_ms": 2}]}},
            "workload": {"num_requests": num_requests,
                         "arrival": {"process": "poisson", "rate_per_s": rate},
                         "prompt_tokens": dict(zip(("dist", "mean", "sigma", "max"),
                                                   ("lognormal",) + prompt)),
                         "output_tokens": dict(zip(("dist", "mean", "sigma", "max"),
                                                   ("lognormal",) + output))},
            "simulation": {"timeline_interval_s": 2.0}}


def test_disaggregated_macro_steps_equal_single_steps():
    scn = macro_scenario("dis", 4, {"hardware": "a100-80gb",
                                    "scheduler": {"policy": "sarathi", "max_num_seqs": 16}},
                         200, 15, (800, 0.8, 4000), (150, 0.8, 800))
    a, b = assert_macro_equals_single(scn, ["pool"])
    assert a.summary["events"] < b.summary["events"]
    assert a.summary["requests"]["finished"] == 200


@pytest.mark.parametrize("seed,util,rate,watermark", [(0, 0.23, 60, 0.0), (3, 0.23, 40, 0.0),
                                                      (5, 0.24, 40, 0.01)])
def test_hand_offs_reserved_inside_macro_steps_equal_single_steps(seed, util, rate, watermark):
    """A hand-off queued during a macro-step reserves its room at the next step boundary
    without ending the macro-step (Replica._boundary_in_run). Tight decode KV makes every
    outcome happen in these cases: the macro-step goes on, ends after the next step, ends at
    the next finish while a context waits for room, and ends at the boundary because the next
    step would preempt (watermark 0). Macro-steps must still equal single steps."""
    scn = macro_scenario("dis-tight", seed, {
        "hardware": "h100-sxm",
        "memory": {"gpu_memory_utilization": util, "watermark": watermark},
        "scheduler": {"policy": "vllm", "max_num_seqs": 256}},
        300, rate, (300, 0.5, 2000), (60, 0.5, 400))
    a, b = assert_macro_equals_single(scn, ["pool"])
    assert a.summary["requests"]["finished"] == 300
    pd.testing.assert_frame_equal(a.timeline, b.timeline)


@pytest.mark.parametrize("policy", ["vllm", "sarathi"])
def test_prefill_replicas_skipping_the_decode_group_change_nothing(policy, monkeypatch):
    """A prefill-role replica hands each context off in the instant its prefill completes, so
    it skips the decode group (Scheduler.hands_off): results equal those of joining the
    group and leaving it at once, and the prefill side never holds a decoder."""
    from llmsim.scheduling.base import Scheduler
    scn = macro_scenario("dis-skip", 2, {"hardware": "h100-sxm",
                                         "scheduler": {"policy": policy, "max_num_seqs": 64}},
                         200, 20, (600, 0.8, 3000), (80, 0.8, 400))
    sim_fast, fast = run(copy.deepcopy(scn))
    pre = [r for p in sim_fast.pools if p.cfg.role == "prefill" for r in p.replicas]
    assert pre and all(e.scheduler.hands_off and e.scheduler.nd == 0
                       and not e.scheduler._finish_list for r in pre for e in r.engines)
    monkeypatch.setattr(Scheduler, "fast_hand_off", False)
    sim_slow, slow = run(copy.deepcopy(scn))
    assert not any(e.scheduler.hands_off for p in sim_slow.pools for r in p.replicas
                   for e in r.engines)
    pd.testing.assert_frame_equal(fast.requests, slow.requests)
    np.testing.assert_array_equal(fast.itl_gaps_s, slow.itl_gaps_s)
    np.testing.assert_array_equal(fast.itl_weights, slow.itl_weights)
    assert (fast.requests["status"] == "finished").all() and len(fast.requests) == 200


def test_hand_offs_leave_no_reference_cycles():
    """A delivered hand-off is freed by reference counting: Handoff and Transfer must not
    refer to each other once the KV has moved (else every hand-off waits for the cyclic GC)."""
    import gc
    scn = macro_scenario("dis-gc", 1, {"hardware": "h100-sxm",
                                       "scheduler": {"policy": "vllm", "max_num_seqs": 64}},
                         100, 20, (600, 0.8, 3000), (40, 0.8, 200))
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        sim, out = run(scn)
        assert (out.requests["status"] == "finished").all()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        kinds = {type(o).__name__ for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()
    assert not kinds & {"Handoff", "Transfer"}
