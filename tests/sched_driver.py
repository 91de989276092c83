"""A tiny SimPy-free engine loop for driving schedulers by hand in tests."""
from llmsim.metrics.recorder import ItlRecorder
from llmsim.workload.request import Request


def make_requests(specs):
    """specs: list of (arrival_s, prompt_tokens, output_tokens)."""
    return [Request(i, t, p, o) for i, (t, p, o) in enumerate(specs)]


def drive(sched, requests, step_time=lambda out: 1.0, max_steps=100000, trace=None):
    """Run ``sched`` over ``requests`` (sorted by arrival); returns the end time.
    ``trace`` (a list) receives (start_s, out) per step."""
    pending = list(requests)
    now = 0.0
    steps = 0
    while pending or sched.has_work():
        while pending and pending[0].arrival_s <= now:
            sched.add_request(pending.pop(0), now)
        if not sched.has_work():
            now = pending[0].arrival_s
            continue
        out = sched.schedule(now)
        if out.is_empty:
            raise AssertionError("scheduler returned an empty step while it has work")
        if trace is not None:
            trace.append((now, out, [st.req.request_id for st, _ in out.prefills], out.num_decodes))
        now += step_time(out)
        sched.update_from_output(out, now)
        sched.kv.check()
        steps += 1
        assert steps < max_steps
    return now


def new_itl():
    return ItlRecorder()
