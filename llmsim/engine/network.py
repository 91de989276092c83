"""Network: links with bandwidth and latency, transfers that share them fairly (max-min).

Contract.

- A :class:`Resource` is a capacity in bytes/s that transfers share: one direction of an
  explicit link of the scenario, or the network port of a replica (egress or ingress: its GPUs'
  NICs together). A :class:`Path` is the resources a transfer crosses plus its one-way latency.
- :meth:`Network.start` starts moving ``num_bytes`` along a path; at every moment the active
  transfers get max-min fair rates (progressive filling: the most contended resource is split
  equally among the transfers that cross it, the rest of their resources' capacity goes to the
  others, and so on). With one resource this is processor sharing. A transfer whose bytes have
  drained is delivered ``latency_s`` later (its ``on_done(transfer)`` callback runs then), so an
  idle path delivers ``num_bytes`` in exactly ``num_bytes / capacity + latency_s``.
- :meth:`Network.abort` cancels a transfer (its callback never runs).
- Events: one SimPy timeout per change of the set of active transfers (the next drain) and one
  per delivery; no process, no per-byte or per-packet work. A transfer alone on the network
  gets one timeout for both, at its delivery: its drain is applied then, or earlier by the
  first start, abort or rate query at or after the drain time (with that time), so what
  anyone observes is the same. Rates are recomputed on every start, drain and abort:
  O(transfers × resources), and transfers in flight are few.

:class:`Topology` maps a pair of replicas to a path (DESIGN §7, docs/cluster.md):
an explicit link between their pools, else one between their regions (a region may be linked to
itself), else — same region — the cluster fabric (only the two ports are shared, latency of the
hardware cards' ``kv_transfer`` link), else the scenario's ``cross_region`` default link.
Explicit and cross-region links are shared by every transfer between their endpoints, in each
direction separately.
"""
from __future__ import annotations

from typing import Any, Callable, Final, Iterable

from llmsim.cost import comm
from llmsim.engine.events import Environment, timeout

#: a transfer has drained when fewer bytes than this fraction of its size are left
_DRAIN_RTOL: Final = 1e-12
_INF: Final = float("inf")


class Resource:
    """A capacity shared by the transfers that cross it (bytes/s)."""

    __slots__ = ("name", "capacity_bytes_per_s", "transfers", "bytes_moved")

    def __init__(self, name: str, capacity_bytes_per_s: float) -> None:
        if not capacity_bytes_per_s > 0:
            raise ValueError(f"resource {name}: capacity must be > 0 bytes/s "
                             f"(got {capacity_bytes_per_s})")
        self.name = name
        self.capacity_bytes_per_s: float = float(capacity_bytes_per_s)
        self.transfers: dict[Transfer, None] = {}     # insertion order
        self.bytes_moved = 0.0

    def __repr__(self) -> str:
        return f"Resource({self.name!r}, {self.capacity_bytes_per_s:.4g} B/s)"


class Path:
    """What a transfer crosses: ``resources`` (shared capacities, kept as a tuple) and its
    one-way latency (seconds, kept as a float).

    Immutable (its attributes are read-only) and compared by value, as a frozen dataclass.
    (A plain class rather than a dataclass with a cached property so that the compiled build
    reads its fields natively: the bottleneck is computed once, here.)"""

    __slots__ = ("_resources", "_latency_s", "_description", "_bottleneck_bytes_per_s")

    def __init__(self, resources: Iterable[Resource], latency_s: float,
                 description: str = "") -> None:
        self._resources: tuple[Resource, ...] = tuple(resources)
        self._latency_s = float(latency_s)
        self._description = description
        # no resource: no bottleneck (Network.start refuses such a path)
        self._bottleneck_bytes_per_s = (min(r.capacity_bytes_per_s for r in self._resources)
                                        if self._resources else 0.0)

    @property
    def resources(self) -> tuple[Resource, ...]:
        return self._resources

    @property
    def latency_s(self) -> float:
        return self._latency_s

    @property
    def description(self) -> str:
        return self._description

    @property
    def bottleneck_bytes_per_s(self) -> float:
        """Capacity of the slowest resource (the rate of a transfer alone on the path)."""
        if not self._resources:
            raise ValueError("a path with no resource has no bottleneck")
        return self._bottleneck_bytes_per_s

    def idle_time_s(self, num_bytes: float) -> float:
        """Time to deliver ``num_bytes`` when nothing else uses the path."""
        return num_bytes / self.bottleneck_bytes_per_s + self._latency_s

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Path):
            return NotImplemented
        return (self._resources == other._resources and self._latency_s == other._latency_s
                and self._description == other._description)

    def __hash__(self) -> int:
        return hash((self._resources, self._latency_s, self._description))

    def __repr__(self) -> str:
        return (f"Path(resources={self._resources!r}, latency_s={self._latency_s!r}, "
                f"description={self._description!r})")


class Transfer:
    """One transfer in flight. ``start_s``, ``drained_s`` and ``done_s`` are set as it goes;
    ``meta`` is the caller's."""

    __slots__ = ("id", "num_bytes", "remaining", "path", "rate", "on_done", "start_s",
                 "drained_s", "done_s", "aborted", "meta", "lone_v")

    def __init__(self, tid: int, num_bytes: float, path: Path,
                 on_done: Callable[[Transfer], Any], start_s: float, meta: Any) -> None:
        self.id = tid
        self.num_bytes: float = float(num_bytes)
        self.remaining: float = float(num_bytes)
        self.path = path
        self.rate = 0.0
        self.on_done = on_done
        self.start_s = start_s
        self.drained_s: float | None = None
        self.done_s: float | None = None
        self.aborted = False
        self.meta = meta
        self.lone_v: int | None = None   # version of the timer that drains and delivers it alone

    @property
    def duration_s(self) -> float | None:
        return None if self.done_s is None else self.done_s - self.start_s


class Network:
    """Transfers over shared resources with max-min fair rates (see module docstring)."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.active: dict[Transfer, None] = {}      # start order
        self._t = 0.0                    # time the remaining bytes were last brought up to date
        self._version = 0
        self._lone: Transfer | None = None   # the transfer alone in flight, drained at _lone_drain_s
        self._lone_drain_s = 0.0
        self._next_id = 0
        self.num_started = 0
        self.num_done = 0
        self.num_aborted = 0
        self.bytes_done = 0.0

    # -------------------------------------------------------------- public ---------------
    def start(self, num_bytes: float, path: Path, on_done: Callable[[Transfer], Any],
              meta: Any = None) -> Transfer:
        """Start moving ``num_bytes`` along ``path``; ``on_done(transfer)`` runs on delivery."""
        if num_bytes < 0:
            raise ValueError(f"num_bytes must be >= 0 (got {num_bytes})")
        resources = path._resources
        if not resources:
            raise ValueError("a path needs at least one resource")
        now: float = self.env._now    # SimPy 4: what env.now returns (a plain attribute read)
        if self._lone is not None:
            self._settle_lone(now)
        self._next_id += 1
        tr = Transfer(self._next_id, num_bytes, path, on_done, now, meta)
        self.num_started += 1
        if num_bytes == 0:
            tr.drained_s = now
            self._deliver_later(tr)
            return tr
        if self.active:
            self._advance(now)
        else:
            self._t = now           # nothing in flight: no bytes to bring up to date
        self.active[tr] = None
        for r in resources:
            r.transfers[tr] = None
        self._reallocate()
        return tr

    def abort(self, tr: Transfer) -> None:
        """Cancel ``tr`` (in flight or waiting for its latency); nothing is delivered."""
        if tr.aborted or tr.done_s is not None:
            return
        tr.aborted = True
        self.num_aborted += 1
        now: float = self.env._now
        self._settle_lone(now)
        if tr in self.active:
            self._advance(now)
            self._remove(tr)
            self._reallocate()

    def rate_of(self, tr: Transfer) -> float:
        self._settle_lone(self.env._now)
        return tr.rate if tr in self.active else 0.0

    # -------------------------------------------------------------- internals ------------
    def _advance(self, now: float) -> None:
        dt = now - self._t
        if dt > 0:
            for tr in self.active:
                moved = tr.rate * dt
                tr.remaining -= moved
                for r in tr.path._resources:
                    r.bytes_moved += moved
        self._t = now

    def _remove(self, tr: Transfer) -> None:
        del self.active[tr]
        for r in tr.path._resources:
            r.transfers.pop(tr, None)

    def _reallocate(self) -> None:
        """Max-min fair rates by progressive filling; then schedule the next drain."""
        self._version += 1
        lone = self._lone
        if lone is not None:               # no longer alone (or gone): its timer is void
            lone.lone_v = None
            self._lone = None
        active = self.active
        if not active:
            return
        if len(active) == 1:
            # one transfer alone: it gets its path's bottleneck (what the filling below gives);
            # one timer at its delivery drains it too, unless something happens before
            tr = next(iter(active))
            tr.rate = rate = tr.path._bottleneck_bytes_per_s
            nxt = tr.remaining / rate
            if nxt < 0:
                nxt = 0.0
            self._lone = tr
            self._lone_drain_s = self._t + nxt
            tr.lone_v = v = self._version
            # at (drain + latency), added in the order the two-timer form adds them
            self._lone_timer(self._lone_drain_s + tr.path._latency_s - self._t, tr, v)
            return
        cap: dict[Resource, float] = {}
        count: dict[Resource, int] = {}
        for tr in active:
            tr.rate = -1.0
            for r in tr.path._resources:
                if r not in cap:
                    cap[r] = r.capacity_bytes_per_s
                    count[r] = 0
                count[r] += 1
        left = len(active)
        while left:
            best: Resource | None = None
            share = 0.0
            for r, n in count.items():
                if n:
                    s = cap[r] / n
                    if best is None or s < share:
                        best, share = r, s
            if share < 0.0:
                share = 0.0
            assert best is not None
            for tr in best.transfers:
                if tr.rate >= 0.0:
                    continue
                tr.rate = share
                left -= 1
                for r in tr.path._resources:
                    cap[r] -= share
                    count[r] -= 1
        self._schedule_drain(min((tr.remaining / tr.rate if tr.rate > 0 else _INF)
                                 for tr in active))

    def _lone_timer(self, delay_s: float, tr: Transfer, version: int) -> None:
        """In ``delay_s``: drain and deliver ``tr`` if it is still alone (timer ``version``).
        (A method of its own: the callback's closure must not capture _reallocate's loop
        variables, which would make every use of them in the compiled loop a cell access.)"""
        ev = timeout(self.env, delay_s)
        ev.callbacks.append(lambda _e: self._on_lone(tr, version))

    def _schedule_drain(self, nxt: float) -> None:
        """The next transfer drains in ``nxt`` seconds at the current rates: a timer then."""
        if nxt == _INF:
            return
        if nxt < 0:
            nxt = 0.0
        version = self._version
        ev = timeout(self.env, nxt)
        ev.callbacks.append(lambda _e: self._on_timer(version))

    def _on_timer(self, version: int) -> None:
        if version != self._version:
            return                           # rates changed since: a newer timer is pending
        now: float = self.env._now
        self._advance(now)
        drained = [tr for tr in self.active
                   if tr.remaining <= tr.num_bytes * _DRAIN_RTOL
                   or (tr.rate > 0 and tr.remaining / tr.rate <= 1e-12 * max(1.0, now))]
        for tr in drained:
            self._remove(tr)
            tr.remaining = 0.0
            tr.drained_s = now
            self._deliver_later(tr)
        self._reallocate()

    def _settle_lone(self, now: float) -> None:
        """Apply the drain of the transfer alone in flight if it is due by ``now``."""
        if self._lone is not None and self._lone_drain_s <= now:
            self._drain_lone()

    def _drain_lone(self) -> None:
        """The transfer alone in flight drained at ``_lone_drain_s`` (not after now): apply
        that, as the drain timer of a transfer among others does; its own timer delivers it."""
        tr = self._lone
        assert tr is not None
        t = self._lone_drain_s
        self._advance(t)
        self._remove(tr)
        tr.remaining = 0.0
        tr.drained_s = t
        self._lone = None
        self._version += 1

    def _on_lone(self, tr: Transfer, version: int) -> None:
        if tr.lone_v != version:
            return                           # it stopped being alone before it drained
        if tr.drained_s is None:
            self._drain_lone()
        self._deliver(tr)

    def _deliver_later(self, tr: Transfer) -> None:
        ev = timeout(self.env, tr.path._latency_s)
        ev.callbacks.append(lambda _e: self._deliver(tr))

    def _deliver(self, tr: Transfer) -> None:
        if tr.aborted:
            return
        tr.done_s = self.env._now
        self.num_done += 1
        self.bytes_done += tr.num_bytes
        tr.on_done(tr)


# ------------------------------------------------------------------------------ topology
def port_capacity_bytes_per_s(stages) -> float:
    """Network capacity of one replica for moving its KV cache: every GPU sends (or receives)
    its own shard over its own link at once, so a stage of ``tp`` GPUs holding a fraction
    ``share`` of the layers finishes after ``share · bytes · s_per_byte / tp``; the replica's
    capacity is set by the slowest stage: ``min(tp / (s_per_byte · share))``. ``stages``:
    ``[(s_per_byte, tp, share)]`` with ``s_per_byte`` of one GPU's link
    (:func:`llmsim.cost.comm.send_coeffs`: bandwidth times the card's point-to-point
    efficiency)."""
    return min(tp / (s_per_byte * share) for s_per_byte, tp, share in stages)


class Topology:
    """Paths between replicas (module docstring). ``links``: the scenario's explicit links
    (objects with ``src, dst, bandwidth_bytes_per_s, latency_s``); ``cross_region``: the default
    link between regions without an explicit one (same attributes, no src/dst) or None."""

    def __init__(self, links: Any = (), cross_region: Any = None) -> None:
        self._links: dict[tuple[Any, Any], tuple[Resource, Any]] = {}
        for lk in links:
            for a, b in ((lk.src, lk.dst), (lk.dst, lk.src)):
                self._links[(a, b)] = (Resource(f"link {a}->{b}", lk.bandwidth_bytes_per_s),
                                       lk.latency_s)
        self._cross = cross_region
        self._cross_res: dict[tuple[str, str], Resource] = {}
        # (src, dst) -> Path: a replica's endpoints never change
        self._paths: dict[tuple[Any, Any], Path] = {}

    def link(self, a: str, b: str) -> tuple[Resource, Any] | None:
        """(Resource, latency_s) of the explicit link from endpoint ``a`` to ``b``, or None."""
        return self._links.get((a, b))

    def region_link(self, ra: str, rb: str) -> tuple[Resource | None, Any]:
        """(Resource or None, latency_s) between two regions: an explicit region link, the
        same-region fabric (None, None), or the cross-region default; raises LookupError when
        two different regions have no link."""
        lk = self._links.get((ra, rb))
        if lk is not None:
            return lk
        if ra == rb:
            return None, None
        if self._cross is None:
            raise LookupError(f"no link between regions '{ra}' and '{rb}': add one to "
                              "cluster.network.links or set cluster.network.cross_region")
        key = (ra, rb)
        res = self._cross_res.get(key)
        if res is None:
            res = self._cross_res[key] = Resource(f"cross-region {ra}->{rb}",
                                                  self._cross.bandwidth_bytes_per_s)
        return res, self._cross.latency_s

    def path(self, src: Any, dst: Any) -> Path:
        """Path from replica ``src`` to replica ``dst`` (objects with ``pool``, ``region``,
        ``port_out``, ``port_in`` and ``fabric_latency_s``)."""
        p = self._paths.get((src, dst))
        if p is None:
            p = self._paths[(src, dst)] = self._path(src, dst)
        return p

    def _path(self, src: Any, dst: Any) -> Path:
        ports = (src.port_out, dst.port_in)
        lk = self._links.get((src.pool, dst.pool))
        if lk is not None:
            return Path(ports + (lk[0],), lk[1], f"link {src.pool}->{dst.pool}")
        res, lat = self.region_link(src.region, dst.region)
        if res is not None:
            return Path(ports + (res,), lat, res.name)
        return Path(ports, max(src.fabric_latency_s, dst.fabric_latency_s),
                    f"fabric of region {src.region}")


def card_hop_coeffs(link_spec, eff) -> tuple[float, float]:
    """(t0_s, s_per_byte) of one hop over a hardware card's link (its efficiency applied)."""
    return comm.send_coeffs(link_spec, eff)
