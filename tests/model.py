"""An executable model of the lease protocol, in plain Python (no Redis).

One method per Lua script of `lockmanager/_scripts.py`, taking the same
arguments and giving the same reply, over dicts instead of Redis keys. It
also plays the DuckDB file's side of fencing: the fence high-water mark the
file records, which survives a Redis flush, and what a writer does on
opening the file (`_settle_fence`): re-seed the counter above the mark if
needed, then claim its fence in the file.

`tests/test_lockmanager_model.py` runs this model beside the real scripts
and compares replies, keys and history after every step. Time is integer
milliseconds of the server clock, moved only by `advance`; nothing here
reads a clock.

The rules, as the model states them:

- a holder has a mode (``s`` shared, ``x`` exclusive), a class, a fence
  (exclusive only), and an expiry; it is gone once ``expiry <= now``;
- waiters are ordered by score, then token: the score is arrival ms plus
  the class penalty, nudged 0.001 past the last score given to the same
  class, so that a class stays FIFO even within one millisecond; a waiter
  whose heartbeat deadline passes is dropped;
- every batch grant makes the other batch waiters age again from then on:
  in their order, each is re-scored to now + its penalty + step/1000;
- grants go from the head: one writer alone, or every reader up to the first
  queued writer (looking at most `WINDOW` waiters deep);
- renewal extends by the TTL unless that would pass the class's max-hold;
- every exclusive grant and every force-release takes the next fence;
- a flush loses every key; the fence counter restarts from 0, and the next
  writer raises it above the file's mark when it opens the file;
- a writer's fence enters the file when it opens it, and each commit
  stamps it again; the file refuses a commit whose fence is below its mark.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

SHARED = "s"
EXCLUSIVE = "x"
MAILBOX_LEN = 16  # a mailbox keeps its latest 16 messages
WINDOW = 64  # one grant step looks this many waiters deep

Reply = tuple[int | str, ...]


@dataclass
class Holder:
    mode: str
    prio: str
    fence: int | None
    since: int
    expiry: int
    wait_ms: int
    renewals: int = 0

    @property
    def fence_text(self) -> str:
        return "" if self.fence is None else str(self.fence)


@dataclass
class Waiter:
    mode: str
    prio: str
    since: int
    ttl: int
    penalty: int
    score: float
    heartbeat: int


@dataclass(frozen=True)
class Event:
    """One history entry; `fields` holds the values the model vouches for."""

    kind: str
    token: str
    fields: tuple[tuple[str, str], ...] = ()


@dataclass
class LeaseModel:
    """The whole state of one lock, plus the file's recorded fence."""

    now: int
    file_mark: int = 0
    fence: int = 0
    seq: int = 0  # arrivals counted
    last_score: dict[str, float] = field(default_factory=dict)  # per class
    fence_set: bool = False
    holders: dict[str, Holder] = field(default_factory=dict)
    waiters: dict[str, Waiter] = field(default_factory=dict)
    mailboxes: dict[str, list[str]] = field(default_factory=dict)
    history: list[Event] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)

    # -- time and disasters ----------------------------------------------

    def advance(self, ms: int) -> None:
        self.now += ms

    def flush(self) -> None:
        """Redis loses every key; the file keeps its mark."""
        self.fence, self.seq, self.fence_set = 0, 0, False
        self.last_score.clear()
        self.holders.clear()
        self.waiters.clear()
        self.mailboxes.clear()
        self.history.clear()
        self.stats.clear()

    # -- the scripts -----------------------------------------------------

    def acquire(
        self,
        token: str,
        mode: str,
        prio: str,
        ttl: int,
        heartbeat: int,
        penalty: int,
    ) -> Reply:
        """First call enqueues, later calls poll; both grant what they can."""
        self._purge()
        if token in self.holders:
            return self._granted(token)

        new = token not in self.waiters
        if new:
            self.seq += 1
            score = float(self.now + penalty)
            last = self.last_score.get(prio, 0.0)
            if score <= last:
                score = last + 0.001
            self.last_score[prio] = score
            waiter = Waiter(mode, prio, self.now, ttl, penalty, score, 0)
            self.waiters[token] = waiter
        self.waiters[token].heartbeat = self.now + heartbeat
        self._pump()

        if token in self.holders:
            return self._granted(token)
        if new:
            for holder in self._holders_by_expiry():
                self._notify(holder, "contended")
        expiries = [h.expiry for h in self.holders.values()]
        wake = min(expiries) - self.now if expiries else -1
        return (2, self.queue().index(token), wake)

    def cancel(self, token: str) -> int:
        """A waiter gives up; a grant that raced the give-up is undone."""
        undone = 0
        if token in self.holders:
            self._drop_holder(token, "released")
            undone = 1
        elif token in self.waiters:
            del self.waiters[token]
            self._event("gave_up", token)
        self.mailboxes.pop(token, None)
        self._pump()
        return undone

    def renew(self, token: str, ttl: int, max_hold: int) -> Reply:
        self._pump()
        holder = self.holders.get(token)
        if holder is None:
            return (0,)

        waiting = len(self.waiters)
        if self.now - holder.since + ttl > max_hold:
            return (3, holder.expiry - self.now, waiting)
        holder.expiry = self.now + ttl
        holder.renewals += 1
        return (1, ttl, waiting)

    def release(self, token: str) -> Reply:
        self.mailboxes.pop(token, None)  # a "lost" notice too: it was read
        holder = self.holders.get(token)
        if holder is None:
            self._pump()
            return (0,)

        self._drop_holder(token, "released")
        self._pump()
        return (1, self.now - holder.since)

    def status(self, token: str) -> Reply:
        self._pump()
        waiting = len(self.waiters)
        holder = self.holders.get(token)
        if holder is None:
            return (0, "", 0, waiting)
        left = holder.expiry - self.now
        return (1, holder.fence_text, left, waiting, holder.mode, holder.prio)

    def reseed(self, token: str, floor: int) -> Reply:
        self._purge()
        holder = self.holders.get(token)
        if holder is None or holder.mode != EXCLUSIVE:
            return (0,)

        self.fence = max(self.fence, floor) + 1
        self.fence_set = True
        holder.fence = self.fence
        self._event("reseed", token, fence=str(self.fence), floor=str(floor))
        return (1, self.fence)

    def force_release(self, only: str = "") -> Reply:
        """Take the lease from every holder (or one) and advance the fence."""
        self._purge()
        count = 0
        for token in self._holders_by_expiry():
            if only in ("", token):
                self._drop_holder(token, "forced")
                self._notify(token, "lost")
                count += 1
        fence = self._next_fence()
        if count == 0:  # audited even when nobody held
            self._event("forced", "", released="0")
        self._pump()
        return (count, fence)

    # -- the file --------------------------------------------------------

    def settle(self, token: str, fence: int) -> int | None:
        """A writer opens the file: reseed if needed, then claim its fence.

        Returns the writer's fence, or None when its lease was lost.
        """
        if fence <= self.file_mark:
            reply = self.reseed(token, self.file_mark)
            if reply == (0,):
                return None
            fence = int(reply[1])
        self.file_mark = max(self.file_mark, fence)
        return fence

    def commit(self, token: str, fence: int) -> str:
        """A write transaction: stamp the fence, confirm, then commit.

        Returns ``committed``, ``fenced`` (the file holds a newer fence) or
        ``lost`` (Redis no longer lists the lease).
        """
        if fence < self.file_mark:
            return "fenced"
        if self.status(token)[0] != 1:
            return "lost"
        self.file_mark = fence
        return "committed"

    # -- views -----------------------------------------------------------

    def queue(self) -> list[str]:
        return sorted(self.waiters, key=lambda t: (self.waiters[t].score, t))

    def keys(self) -> set[str]:
        """Key suffixes (after the prefix and a colon) Redis should hold."""
        keys = {f"h:{t}" for t in self.holders}
        keys |= {f"w:{t}" for t in self.waiters}
        keys |= {f"m:{t}" for t, box in self.mailboxes.items() if box}
        if self.holders:
            keys.add("exp")
        if self.waiters:
            keys |= {"queue", "hb"}
        if self.fence_set:
            keys.add("fence")
        if self.seq:
            keys.add("seq")
        if self.last_score:
            keys.add("order")
        if self.history:
            keys |= {"hist", "stats"}
        return keys

    # -- steps shared by the scripts ---------------------------------------

    def _granted(self, token: str) -> Reply:
        holder = self.holders[token]
        return (1, holder.fence_text, holder.expiry - self.now)

    def _holders_by_expiry(self) -> list[str]:
        return sorted(self.holders, key=lambda t: (self.holders[t].expiry, t))

    def _next_fence(self) -> int:
        self.fence += 1
        self.fence_set = True
        return self.fence

    def _purge(self) -> None:
        for token in self._holders_by_expiry():
            if self.holders[token].expiry <= self.now:
                self._drop_holder(token, "expired")
                self._notify(token, "lost")
        by_heartbeat = sorted(
            self.waiters, key=lambda t: (self.waiters[t].heartbeat, t)
        )
        for token in by_heartbeat:
            if self.waiters[token].heartbeat <= self.now:
                del self.waiters[token]
                self.mailboxes.pop(token, None)
                self._event("waiter_dropped", token)

    def _pump(self) -> None:
        """Grant from the head of the queue; see the module docstring."""
        self._purge()
        count = len(self.holders)
        writer_holds = any(h.mode == EXCLUSIVE for h in self.holders.values())
        granted: list[str] = []
        for token in self.queue()[:WINDOW]:
            mode = self.waiters[token].mode
            if mode == EXCLUSIVE:
                if count == 0:
                    self._grant(token)
                    granted.append(token)
                break
            if writer_holds:
                break
            self._grant(token)
            granted.append(token)
            count += 1

        if granted and self.waiters:
            for token in granted:
                self._notify(token, "contended")

    def _grant(self, token: str) -> None:
        waiter = self.waiters.pop(token)
        fence = self._next_fence() if waiter.mode == EXCLUSIVE else None
        waited = self.now - waiter.since
        holder = Holder(
            waiter.mode, waiter.prio, fence, self.now, self.now + waiter.ttl, waited
        )
        self.holders[token] = holder
        self._notify(token, f"granted:{holder.fence_text}")
        self._event(
            "grant",
            token,
            mode=waiter.mode,
            fence=holder.fence_text,
            wait_ms=str(waited),
        )
        if waiter.prio == "batch":
            self._restart_aging()

    def _restart_aging(self) -> None:
        batch = [t for t in self.queue() if self.waiters[t].prio == "batch"]
        for step, token in enumerate(batch, start=1):
            waiter = self.waiters[token]
            waiter.score = self.now + waiter.penalty + step / 1000
            self.last_score["batch"] = waiter.score

    def _drop_holder(self, token: str, kind: str) -> None:
        holder = self.holders.pop(token)
        self._event(
            kind,
            token,
            mode=holder.mode,
            fence=holder.fence_text,
            wait_ms=str(holder.wait_ms),
            hold_ms=str(self.now - holder.since),
        )

    def _notify(self, token: str, message: str) -> None:
        box = self.mailboxes.setdefault(token, [])
        box.append(message)
        del box[:-MAILBOX_LEN]

    def _event(self, kind: str, token: str, **fields: str) -> None:
        self.history.append(Event(kind, token, tuple(sorted(fields.items()))))
        self.stats[kind] += 1
