"""The real Lua scripts against the executable model, step by step.

Hypothesis drives random interleavings of actors that acquire (first call
and polls), open the file, commit, renew, release, cancel and crash, plus
clock jumps, force-releases and Redis flushes. Every script runs for real,
called as `_sync.py` calls it (``register_script(src)(keys=[prefix],
args=[history_len, ...])`` on `redis.Redis` clients), on a fakeredis server
with Lua; `tests/model.py` runs beside it, and after every step the two must
agree on every reply, key, mailbox, counter and history entry.

The clock. The scripts read time only through Redis ``TIME``, which
fakeredis answers from ``time.time()`` as looked up in its
``server_mixin`` module. `ServerClock` replaces that module reference for
the life of one harness, so the server clock stands still until a rule
moves it and every jump is exact. Key expiry (``PEXPIRE`` on mailboxes)
runs on fakeredis's other clock and is left alone.

The DuckDB file is an in-memory database that outlives flushes. A writer
that opens it goes through the library's own `_settle_fence` (RESEED when
the file's mark is not below the grant's fence, then the claim), and
commits as `Lease.transaction` does (`stamp_fence`, then STATUS, then
COMMIT), so fencing is checked end to end with the library's own SQL.

`FLUXION_MODEL_EXAMPLES=2000` runs a bigger search: above the default 80
examples, each runs 80 steps instead of 60.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import duckdb
import fakeredis
import pytest
import redis
from fakeredis.commands_mixins import server_mixin
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from lockmanager import DuckDBWriteLockManager, FenceRejected, LeaseConfig, LeaseLost
from lockmanager import _core as core
from lockmanager._duck import ensure_fence_table, stamp_fence
from lockmanager._scripts import ALL, GRANTED
from lockmanager.private_redis import PrivateRedis
from tests.model import EXCLUSIVE, SHARED, LeaseModel

START_MS = 1_760_000_000_000
HIST_LEN = 100_000
HEARTBEAT = 2000
PENALTY = 1500  # batch_aging, in ms
TTLS = (1000, 3000)
MAX_HOLD = {"interactive": 3500, "batch": 6000}
JUMPS = (1, 5, 250, 999, 1000, 1001, 1999, 2000, 2001, 3000, 4500, 9001)
TICKS = (250, 333, 999)  # below every TTL: a live holder renews in time
MAX_LIVE_ACTORS = 8
MAX_FLUSHES = 2  # per example, like MAX_FORCED: rare events stay rare
MAX_FORCED = 2
KEPT = {"fence", "seq", "order", "hist", "stats"}  # outlive every lease

DEFAULT_EXAMPLES = 80
EXAMPLES = int(os.environ.get("FLUXION_MODEL_EXAMPLES", DEFAULT_EXAMPLES))


class ServerClock:
    """Stands in for the `time` module inside fakeredis's TIME command."""

    def __init__(self, ms: int):
        self.ms = ms

    def time(self) -> float:
        return self.ms / 1000


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


# Test-only and read-only: the whole state of one lock in one reply, with
# the history entries after stream id ARGV[1].
DUMP = r"""
local P = KEYS[1]
local function pairs_of(zset, suffix)
  local out = {}
  local flat = redis.call('ZRANGE', P .. zset, 0, -1, 'WITHSCORES')
  for i = 1, #flat, 2 do
    out[#out + 1] = {flat[i], flat[i + 1],
                     redis.call('HGETALL', P .. suffix .. flat[i])}
  end
  return out
end
local keys = redis.call('KEYS', P .. ':*')
local boxes = {}
for _, k in ipairs(keys) do
  if string.sub(k, #P + 2, #P + 3) == 'm:' then
    boxes[#boxes + 1] = {k, redis.call('LRANGE', k, 0, -1)}
  end
end
local hist = redis.call('XRANGE', P .. ':hist', '(' .. ARGV[1], '+')
return {keys, redis.call('GET', P .. ':fence') or '0',
        redis.call('GET', P .. ':seq') or '0', pairs_of(':exp', ':h:'),
        redis.call('ZRANGE', P .. ':queue', 0, -1, 'WITHSCORES'),
        pairs_of(':hb', ':w:'), redis.call('HGETALL', P .. ':order'),
        boxes, redis.call('HGETALL', P .. ':stats'), hist}
"""


def _fields(flat: tuple[str, ...]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2]))


class Snapshot:
    """The DUMP reply, shaped like `LeaseModel` so the two compare."""

    def __init__(self, reply: tuple[Any, ...], cut: int):
        keys, fence, seq, holders, queue, waiters, order, boxes, stats, hist = reply
        self.keys = {k[cut:] for k in keys}
        self.fence, self.seq = int(fence), int(seq)
        self.holders = {}
        for token, expiry, flat in holders:
            h = _fields(flat)
            self.holders[token] = (
                h["mode"],
                h["prio"],
                h["fence"],
                int(h["since"]),
                int(float(expiry)),
                int(h["wait_ms"]),
                int(h["renewals"]),
            )
        self.queue = list(queue[::2])
        scores = {t: float(score) for t, score in zip(queue[::2], queue[1::2])}
        self.waiters = {}
        for token, beat, flat in waiters:
            w = _fields(flat)
            self.waiters[token] = (
                w["mode"],
                w["prio"],
                int(w["since"]),
                int(w["ttl"]),
                scores.get(token),
                int(float(beat)),
            )
        self.last_score = {k: float(v) for k, v in _fields(order).items()}
        self.mailboxes = {k[cut + 2 :]: list(box) for k, box in boxes}
        self.stats = {k: int(v) for k, v in _fields(stats).items()}
        self.history = [_fields(flat) for _, flat in hist]
        self.last_id = hist[-1][0] if hist else None

    def state(self) -> dict[str, Any]:
        return {
            "fence": self.fence,
            "seq": self.seq,
            "holders": self.holders,
            "queue": self.queue,
            "waiters": self.waiters,
            "last_score": self.last_score,
            "mailboxes": self.mailboxes,
            "stats": self.stats,
        }

    def events(self, wanted: list[dict[str, str]]) -> list[Any]:
        """New history as (event, token, fields), keeping the fields asked for."""
        out = []
        for i, event in enumerate(self.history):
            names = wanted[i] if i < len(wanted) else {}
            fields = {f: event.get(f) for f in names}
            out.append((event["event"], event["token"], fields))
        return out


class ScriptHarness:
    """A fakeredis server with Lua, a frozen server clock, and the scripts."""

    def __init__(self, clients: int = 1):
        self.clock = ServerClock(START_MS)
        self._patch = mock.patch.object(server_mixin, "time", self.clock)
        self._patch.start()
        server = fakeredis.FakeServer()
        self.clients: list[redis.Redis] = [
            fakeredis.FakeRedis(server=server) for _ in range(clients)
        ]
        self._scripts = [
            {name: c.register_script(src) for name, src in ALL.items()}
            for c in self.clients
        ]
        config = LeaseConfig(key_prefix="model", history_len=HIST_LEN)
        # Used for `_settle_fence` alone; a manager opens no file by itself.
        self.managers = [
            DuckDBWriteLockManager(c, "model.duckdb", config=config)
            for c in self.clients
        ]
        self.prefix = self.managers[0].key
        self._dump = self.clients[0].register_script(DUMP)

    def run(self, script: str, *args: Any, client: int = 0) -> Any:
        reply = self._scripts[client][script](
            keys=[self.prefix], args=[HIST_LEN, *args]
        )
        return _plain(reply)

    def key(self, suffix: str) -> str:
        return f"{self.prefix}:{suffix}"

    def snapshot(self, after: str = "0-0") -> Snapshot:
        """Every key of the lock, and history after `after`, in one call."""
        reply = self._dump(keys=[self.prefix], args=[after])
        return Snapshot(_plain(reply), len(self.prefix) + 1)

    def suffixes(self) -> set[str]:
        start = len(self.prefix) + 1
        return {k.decode()[start:] for k in self.clients[0].keys(self.prefix + ":*")}

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self._patch.stop()


@pytest.fixture
def harness() -> Iterator[ScriptHarness]:
    h = ScriptHarness()
    yield h
    h.close()


@dataclass
class Actor:
    """One would-be holder, as a shell would drive the scripts for it."""

    token: str
    mode: str
    prio: str
    ttl: int
    client: int
    #: waiting | opening (writer granted, file not open) | holding |
    #: lost (told its lease is gone) | crashed | done
    state: str = "waiting"
    fence: int | None = None
    arrival: int = 0  # when it last joined the queue, counted by the test


@functools.cache
def _duckdb() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()  # one instance: connecting costs ~25 ms a time


def _fresh_file() -> duckdb.DuckDBPyConnection:
    """The 'file' of one example: an in-memory database that no flush reaches."""
    con = _duckdb()
    con.execute("DROP TABLE IF EXISTS writes; DROP TABLE IF EXISTS _fluxion_fence")
    ensure_fence_table(con)
    con.execute("CREATE TABLE writes (fence BIGINT)")
    return con


def _pick(actors: list[Actor], pick: int) -> Actor:
    return actors[pick % len(actors)]


class LeaseProtocol(RuleBasedStateMachine):
    """Actors, a clock and a Redis that may lose everything."""

    def __init__(self) -> None:
        super().__init__()
        self.h = ScriptHarness(clients=3)
        self.model = LeaseModel(now=START_MS)
        self.file = _fresh_file()
        self.actors: list[Actor] = []
        self.arrivals = 0
        self.flushes = 0
        self.forced = 0
        self.top_fence = 0  # highest fence Redis handed out since the flush
        self.history_seen = 0  # model events checked against Redis
        self.last_event = "0-0"  # stream id of the last one
        self.holders_seen: set[str] = set()
        self.clean = True  # no rule or check has failed in this example

    def _in(self, *states: str) -> list[Actor]:
        return [a for a in self.actors if a.state in states]

    # -- the calls a shell makes ---------------------------------------------

    def _acquire(self, actor: Actor) -> None:
        if not self._listed(actor.token):  # this call (re)joins the queue
            self.arrivals += 1
            actor.arrival = self.arrivals
        penalty = PENALTY if actor.prio == "batch" else 0
        args = (actor.token, actor.mode, actor.prio, actor.ttl, HEARTBEAT, penalty)
        got = self.h.run("acquire", *args, actor.token, "{}", client=actor.client)

        assert got == self.model.acquire(*args)
        if got[0] != GRANTED:
            actor.state = "waiting"
            return
        actor.fence = int(got[1]) if got[1] else None
        actor.state = "opening" if actor.mode == EXCLUSIVE else "holding"

    def _listed(self, token: str) -> bool:
        """Whether Redis lists the token as a live waiter or holder now."""
        r, now = self.h.clients[0], self.h.clock.ms
        beat = r.zscore(self.h.key("hb"), token)
        expiry = r.zscore(self.h.key("exp"), token)
        return (beat or 0) > now or (expiry or 0) > now

    def _open(self, actor: Actor) -> None:
        """What `acquire` does once the file is open: `_settle_fence`."""
        assert actor.fence is not None
        mark = ensure_fence_table(self.file)
        want = self.model.settle(actor.token, actor.fence)
        manager = self.h.managers[actor.client]
        handle = SimpleNamespace(connection=self.file)
        try:
            got: int | None = manager._settle_fence(handle, actor.token, actor.fence)
        except LeaseLost:
            got = None

        assert got == want
        if got is None:  # acquire gives the turn back and raises
            self._release(actor)
            return
        assert got > mark, f"fence {got} not above the file's mark {mark}"
        actor.fence = got
        actor.state = "holding"

    def _commit(self, actor: Actor) -> str:
        """What `Lease.transaction` does: stamp, write, confirm, commit."""
        cur = self.file.cursor()
        try:
            cur.execute("BEGIN TRANSACTION")
            outcome = self._stamp_and_confirm(cur, actor)
            cur.execute("COMMIT" if outcome == "committed" else "ROLLBACK")
            return outcome
        finally:
            cur.close()

    def _stamp_and_confirm(self, cur: duckdb.DuckDBPyConnection, actor: Actor) -> str:
        assert actor.fence is not None
        try:
            stamp_fence(cur, fence=actor.fence, token=actor.token, key=self.h.prefix)
        except FenceRejected:
            return "fenced"
        cur.execute("INSERT INTO writes VALUES (?)", [actor.fence])
        reply = self.h.run("status", actor.token, client=actor.client)
        return "committed" if core.parse_status(list(reply)).held else "lost"

    def _renew(self, actor: Actor) -> None:
        args = (actor.token, actor.ttl, MAX_HOLD[actor.prio])
        got = self.h.run("renew", *args, client=actor.client)

        assert got == self.model.renew(*args)
        if got == (0,):
            actor.state = "lost"

    def _release(self, actor: Actor) -> None:
        got = self.h.run("release", actor.token, client=actor.client)
        assert got == self.model.release(actor.token)
        actor.state = "done"

    def _jump(self, ms: int) -> None:
        self.h.clock.ms += ms
        self.model.advance(ms)

    def _file_mark(self) -> int:
        row = self.file.execute("SELECT fence FROM _fluxion_fence").fetchone()
        assert row is not None
        return int(row[0])

    # -- rules -----------------------------------------------------------

    @initialize(mark=st.integers(0, 3))
    def file_from_an_earlier_life(self, mark: int) -> None:
        """The file may already hold a fence from before this Redis existed."""
        self.file.execute("UPDATE _fluxion_fence SET fence = ?", [mark])
        self.model.file_mark = mark

    @precondition(
        lambda self: len(self._in("waiting", "opening", "holding")) < MAX_LIVE_ACTORS
    )
    @rule(
        mode=st.sampled_from([SHARED, EXCLUSIVE]),
        prio=st.sampled_from(["interactive", "batch"]),
        ttl=st.sampled_from(TTLS),
        client=st.integers(0, 2),
    )
    def arrive(self, mode: str, prio: str, ttl: int, client: int) -> None:
        self.clean = False
        actor = Actor(f"t{len(self.actors):03d}", mode, prio, ttl, client)
        self.actors.append(actor)
        self._acquire(actor)

    @precondition(lambda self: self._in("waiting"))
    @rule(pick=st.integers(0, 99))
    def poll(self, pick: int) -> None:
        self.clean = False
        self._acquire(_pick(self._in("waiting"), pick))

    @precondition(lambda self: self._in("opening"))
    @rule(pick=st.integers(0, 99))
    def open_file(self, pick: int) -> None:
        self.clean = False
        self._open(_pick(self._in("opening"), pick))

    @precondition(lambda self: self._in("holding"))
    @rule(pick=st.integers(0, 99))
    def renew(self, pick: int) -> None:
        self.clean = False
        self._renew(_pick(self._in("holding"), pick))

    @rule(ms=st.sampled_from(TICKS))
    def tick(self, ms: int) -> None:
        """Time passes in a healthy system: keepers renew, waiters poll."""
        self.clean = False
        self._jump(ms)
        for actor in self._in("holding"):
            self._renew(actor)
        for actor in self._in("waiting"):
            self._acquire(actor)

    @precondition(lambda self: self._in("holding", "opening", "lost"))
    @rule(pick=st.integers(0, 99))
    def release(self, pick: int) -> None:
        self.clean = False
        self._release(_pick(self._in("holding", "opening", "lost"), pick))

    @precondition(lambda self: self._in("waiting"))
    @rule(pick=st.integers(0, 99))
    def cancel(self, pick: int) -> None:
        self.clean = False
        actor = _pick(self._in("waiting"), pick)
        got = self.h.run("cancel", actor.token, client=actor.client)

        assert got == self.model.cancel(actor.token)
        actor.state = "done"

    @precondition(lambda self: [a for a in self._in("holding") if a.mode == EXCLUSIVE])
    @rule(pick=st.integers(0, 99))
    def commit(self, pick: int) -> None:
        self.clean = False
        writers = [a for a in self._in("holding") if a.mode == EXCLUSIVE]
        actor = _pick(writers, pick)
        assert actor.fence is not None
        want = self.model.commit(actor.token, actor.fence)
        got = self._commit(actor)

        assert got == want
        if got == "fenced":
            expiry = self.h.clients[0].zscore(self.h.key("exp"), actor.token)
            live = expiry is not None and expiry > self.h.clock.ms
            assert not live, "the file refused a lease Redis still lists"
        if got != "committed":
            actor.state = "lost"

    @precondition(lambda self: self._in("holding"))
    @rule(pick=st.integers(0, 99))
    def status(self, pick: int) -> None:
        self.clean = False
        actor = _pick(self._in("holding"), pick)
        got = self.h.run("status", actor.token, client=actor.client)
        assert got == self.model.status(actor.token)

    @precondition(lambda self: self._in("waiting", "opening", "holding"))
    @rule(pick=st.integers(0, 99))
    def crash(self, pick: int) -> None:
        self.clean = False
        _pick(self._in("waiting", "opening", "holding"), pick).state = "crashed"

    @rule(ms=st.sampled_from(JUMPS))
    def jump(self, ms: int) -> None:
        """Time passes with everyone paused (GC, SIGSTOP, a clock step)."""
        self.clean = False
        self._jump(ms)

    @precondition(lambda self: self.flushes < MAX_FLUSHES)
    @rule()
    def flush(self) -> None:
        self.clean = False
        self.h.clients[0].flushall()
        self.model.flush()
        self.flushes += 1
        self.top_fence = 0
        self.history_seen = 0
        self.last_event = "0-0"

    @precondition(lambda self: self.model.holders and self.forced < MAX_FORCED)
    @rule(pick=st.integers(0, 99), one=st.booleans())
    def force_release(self, pick: int, one: bool) -> None:
        self.clean = False
        self.forced += 1
        holders = sorted(self.model.holders)
        only = holders[pick % len(holders)] if one and holders else ""
        got = self.h.run("force_release", "ops", "test", only)

        assert got == self.model.force_release(only)
        assert got[1] > self.top_fence
        self.top_fence = got[1]

    # -- checks after every step -----------------------------------------------

    @invariant()
    def agrees_with_the_model_and_stays_safe(self) -> None:
        self.clean = False
        snap = self.h.snapshot(self.last_event)
        assert snap.keys == self.model.keys()
        assert snap.state() == self._model_state()
        new = self.model.history[self.history_seen :]
        want = [(e.kind, e.token, dict(e.fields)) for e in new]
        assert snap.events([fields for _, _, fields in want]) == want
        self._one_writer_alone_or_readers_only(snap)
        self._fifo_inside_a_class(snap)
        self._fences_only_grow(snap)
        self.history_seen += len(new)
        self.last_event = snap.last_id or self.last_event
        self.clean = True

    def _one_writer_alone_or_readers_only(self, snap: Snapshot) -> None:
        live = [t for t, h in snap.holders.items() if h[4] > self.h.clock.ms]
        writers = [t for t in live if snap.holders[t][0] == EXCLUSIVE]
        assert len(writers) <= 1, f"exclusive holders {writers}"
        assert not writers or len(live) == 1, f"readers beside a writer: {live}"

    def _fifo_inside_a_class(self, snap: Snapshot) -> None:
        by_token = {a.token: a for a in self.actors}
        for token in set(snap.holders) - self.holders_seen:
            granted = by_token[token]
            passed = [
                q
                for q in snap.queue
                if by_token[q].prio == granted.prio
                and by_token[q].arrival < granted.arrival
            ]
            assert not passed, f"{token} granted before earlier {passed}"
        self.holders_seen = set(snap.holders)

    def _fences_only_grow(self, snap: Snapshot) -> None:
        for event in snap.history:
            kind = event["event"]
            if kind == "reseed" or (kind == "grant" and event["mode"] == EXCLUSIVE):
                fence = int(event["fence"])
                assert fence > self.top_fence, f"fence {fence} after {self.top_fence}"
                self.top_fence = fence

    def _model_state(self) -> dict[str, Any]:
        m = self.model
        return {
            "fence": m.fence,
            "seq": m.seq,
            "holders": {
                t: (
                    h.mode,
                    h.prio,
                    h.fence_text,
                    h.since,
                    h.expiry,
                    h.wait_ms,
                    h.renewals,
                )
                for t, h in m.holders.items()
            },
            "queue": m.queue(),
            "waiters": {
                t: (w.mode, w.prio, w.since, w.ttl, w.score, w.heartbeat)
                for t, w in m.waiters.items()
            },
            "last_score": m.last_score,
            "mailboxes": {t: box for t, box in m.mailboxes.items() if box},
            "stats": dict(m.stats),
        }

    # -- the end: everyone is served, nothing is left behind -------------------

    def teardown(self) -> None:
        try:
            if self.clean:
                self._drain()
        finally:
            self.h.close()

    def _drain(self) -> None:
        """Holders release; live waiters keep polling until each is served."""
        for actor in self._in("holding", "opening", "lost"):
            self._release(actor)
        for _ in range(50):
            waiting = self._in("waiting")
            if not waiting:
                break
            self._jump(HEARTBEAT // 4)
            for actor in waiting:
                self._acquire(actor)
                if actor.state == "opening":
                    self._open(actor)
                if actor.state == "holding":
                    self._release(actor)
            self.agrees_with_the_model_and_stays_safe()
        assert not self._in("waiting"), "live waiters never served"

        # What crashed actors left behind times out; a script call purges it.
        self._jump(max(TTLS) + HEARTBEAT)
        assert self.h.run("status", "nobody") == self.model.status("nobody")
        self.agrees_with_the_model_and_stays_safe()
        leftover = self.h.suffixes() - KEPT
        assert all(s.startswith("m:") for s in leftover), leftover
        for suffix in leftover:  # a "lost" notice nobody read; it expires
            assert self.h.clients[0].pttl(self.h.key(suffix)) > 0


TestLeaseProtocol = LeaseProtocol.TestCase
if EXAMPLES > DEFAULT_EXAMPLES:  # a long search, asked for on purpose
    TestLeaseProtocol.pytestmark = [pytest.mark.timeout(0)]
TestLeaseProtocol.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=80 if EXAMPLES > DEFAULT_EXAMPLES else 60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- single timelines: the harness itself, and bugs the model pointed at -----


def _acquire(h: ScriptHarness, token: str, mode: str = EXCLUSIVE) -> Any:
    return h.run("acquire", token, mode, "interactive", 3000, HEARTBEAT, 0, token, "{}")


def test_scripts_read_the_test_clock(harness: ScriptHarness) -> None:
    """A jump of the test clock is exactly what the scripts see."""
    assert _acquire(harness, "a") == (1, "1", 3000)

    harness.clock.ms += 1234

    assert harness.run("status", "a") == (1, "1", 3000 - 1234, 0, "x", "interactive")


def test_same_millisecond_arrivals_are_served_in_arrival_order(
    harness: ScriptHarness,
) -> None:
    """Ties inside one millisecond go by arrival, not by token or counter."""
    _acquire(harness, "holder")
    arrivals = ["w9", "w5", "w1"]  # token order is the reverse of arrival
    for token in arrivals:
        _acquire(harness, token)

    served = []
    holder = "holder"
    for _ in arrivals:
        harness.run("release", holder)
        holder = next(t for t in arrivals if _acquire(harness, t)[0] == GRANTED)
        served.append(holder)

    assert served == arrivals


def test_a_holder_that_lost_its_lease_leaves_no_key_once_it_releases(
    harness: ScriptHarness,
) -> None:
    """Releasing after an expiry also clears the 'lost' notice's mailbox."""
    _acquire(harness, "a")
    harness.clock.ms += 5000
    assert harness.run("renew", "a", 3000, 60000) == (0,)

    assert harness.run("release", "a") == (0,)

    assert harness.suffixes() <= KEPT


def test_fence_of_a_later_writer_beats_every_earlier_one_across_a_flush(
    own_redis: PrivateRedis, tmp_path: Path, key_prefix: str
) -> None:
    """After FLUSHALL a new writer's fence exceeds every earlier grant's."""
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=3)
    mgr = DuckDBWriteLockManager(own_redis.url, tmp_path / "f.duckdb", config=config)
    with mgr.write() as lease, lease.transaction():
        pass
    with mgr.write() as earlier:  # opens the file, commits nothing
        pass
    flusher = redis.Redis.from_url(own_redis.url)
    flusher.flushall()
    flusher.close()

    with mgr.write() as later:
        pass
    mgr.close()

    assert earlier.fence is not None and later.fence is not None
    assert later.fence > earlier.fence
