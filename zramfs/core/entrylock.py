"""Preemptible entry locks: one reader-writer lock per zram slot, kept in the slot table.

This is the idea of the kernel patch "zram: switch to non-atomic entry locking"
(merged as "zram: sleepable entry locking"): the per-slot lock is a few bits in
the slot's own flags word, and its holder may *sleep* while holding it — for us,
``await`` compression in a worker thread or backing-store I/O — without stalling
any other slot of the device.

Why not one ``trio.Lock`` per slot: a 100 GiB device has 26 million slots, and a
Python lock object costs ~100 bytes.  Like the kernel, which went from a spinlock
per entry back to a bit lock to keep the table small, the lock state lives in the
table word (``WRITER`` bit, reader count, ``WAITERS`` bit); only slots somebody
actually waits for get a wait queue, created on contention and dropped when the
last waiter leaves.

Contract (the invariants ``docs/design.md`` relies on):

* **Modes.** ``lock()`` is exclusive (writers: store, free, recompress,
  writeback); ``lock_shared()`` admits any number of concurrent readers up to
  `MAX_READERS` (beyond that, readers queue like everyone else).
* **No spinning.** A task that cannot take the lock parks
  (`trio.lowlevel.wait_task_rescheduled`) and is woken by the releasing task.
* **FIFO with hand-off; writers are not starved.** Once anyone waits on a slot
  (``WAITERS`` set), every newcomer queues behind it, even a reader that could
  share with the current readers.  The releaser hands the lock directly to the
  head of the queue (a writer, or every reader up to the next writer), so the
  woken task owns the lock before it runs, as `trio.Lock` does.
* **Checkpoints.** The uncontended path is synchronous: no checkpoint, no
  scheduling, a few integer operations.  This deviates from trio's "every async
  function is a checkpoint" convention on purpose — the data path locks up to
  256 slots per 1 MiB request, and the request as a whole checkpoints.  A task
  that has to wait does block at a real checkpoint and can be cancelled there.
* **Cancellation never leaks a lock.** Cancelled while waiting: the waiter is
  removed from the queue without having been granted anything, and the queue
  is re-examined (readers queued behind a cancelled writer may now go).  Once a
  waiter has been granted the lock it is rescheduled with it, so it cannot be
  cancelled out of ownership; callers release in ``finally`` (or use the
  context managers).
* **Try-lock** (`try_lock`) never waits and never barges past waiters: it is
  the slot-free-notify path of swap, which counts ``miss_free`` on failure.

Everything runs on the trio thread; worker threads never touch lock state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, MutableSequence
from contextlib import asynccontextmanager
from functools import partial

import trio

# Bit layout inside a slot's attribute word (see slots.py for the other bits).
LOCK_SHIFT = 21
WRITER = 1 << LOCK_SHIFT
WAITERS = 1 << (LOCK_SHIFT + 1)
READER_SHIFT = LOCK_SHIFT + 2
READER_ONE = 1 << READER_SHIFT
READER_BITS = 8
READER_MASK = ((1 << READER_BITS) - 1) << READER_SHIFT
MAX_READERS = (1 << READER_BITS) - 1
LOCK_MASK = WRITER | WAITERS | READER_MASK

_EXCLUSIVE = 0
_SHARED = 1


class _Waiter:
    __slots__ = ("task", "mode")

    def __init__(self, task: trio.lowlevel.Task, mode: int) -> None:
        self.task = task
        self.mode = mode


class LockStats:
    """Contention counters of one `EntryLocks` (or `DevLock`).

    ``acquired`` counts every grant, fast or slow path.  Everything else is
    counted on the contended slow path only (`EntryLocks._wait`), so an
    uncontended lock/unlock pays exactly one integer increment:

    * ``contended`` — waits started (a task had to queue);
    * ``cancelled_waits`` — waits that ended in cancellation, nothing granted;
    * ``max_queue`` — the longest queue one lock word ever had;
    * ``wait_ns_total`` / ``wait_ns_max`` — time from queueing until the lock
      was handed over or the wait was cancelled, in ns of the trio clock
      (`trio.current_time`, so tests can drive it with a ``MockClock``).

    Shown by debugfs ``lock_stat`` (a zramfs extension) and printed by the
    soak test.
    """

    __slots__ = (
        "acquired",
        "contended",
        "cancelled_waits",
        "max_queue",
        "wait_ns_total",
        "wait_ns_max",
    )

    def __init__(self) -> None:
        self.acquired = 0
        self.contended = 0
        self.cancelled_waits = 0
        self.max_queue = 0
        self.wait_ns_total = 0
        self.wait_ns_max = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def _waited(self, start: float) -> None:
        ns = round((trio.current_time() - start) * 1e9)
        if ns < 0:  # a clock that went backwards (only a misused MockClock can)
            ns = 0
        self.wait_ns_total += ns
        if ns > self.wait_ns_max:
            self.wait_ns_max = ns


class EntryLocks:
    """Reader-writer locks over the words of ``attr`` (one lock per index).

    ``attr`` is any mutable sequence of non-negative ints whose bits
    `LOCK_MASK` belong to this class (a ``memoryview`` cast to ``"Q"`` over
    the slot table, or a plain list for a single lock).  Other bits of the word
    are left alone, so the caller may keep flags and sizes in the same word.
    """

    __slots__ = ("attr", "_queues", "stats")

    def __init__(self, attr: MutableSequence[int] | memoryview) -> None:
        self.attr = attr
        self._queues: dict[int, deque[_Waiter]] = {}
        self.stats = LockStats()

    # -- non-blocking -------------------------------------------------------

    def try_lock(self, i: int) -> bool:
        """Take slot ``i`` exclusively if nobody holds or waits for it."""
        a = self.attr[i]
        if a & LOCK_MASK:
            return False
        self.attr[i] = a | WRITER
        self.stats.acquired += 1
        return True

    def try_lock_shared(self, i: int) -> bool:
        """Take a read share of slot ``i`` if no writer holds or waits."""
        a = self.attr[i]
        if a & (WRITER | WAITERS) or (a & READER_MASK) == READER_MASK:
            return False
        self.attr[i] = a + READER_ONE
        self.stats.acquired += 1
        return True

    def is_locked(self, i: int) -> bool:
        return bool(self.attr[i] & (WRITER | READER_MASK))

    def holds_writer(self, i: int) -> bool:
        return bool(self.attr[i] & WRITER)

    # -- blocking -----------------------------------------------------------

    async def lock(self, i: int) -> None:
        """Take slot ``i`` exclusively, parking until it is handed over.

        Not a checkpoint when uncontended (see module docstring).
        """
        a = self.attr[i]
        if not a & LOCK_MASK:
            self.attr[i] = a | WRITER
            self.stats.acquired += 1
            return
        await self._wait(i, _EXCLUSIVE)

    async def lock_shared(self, i: int) -> None:
        """Take a read share of slot ``i``, parking behind any writer."""
        a = self.attr[i]
        if not a & (WRITER | WAITERS) and (a & READER_MASK) != READER_MASK:
            self.attr[i] = a + READER_ONE
            self.stats.acquired += 1
            return
        await self._wait(i, _SHARED)

    def unlock(self, i: int) -> None:
        """Release an exclusive hold; hand the slot to the next waiter(s)."""
        a = self.attr[i]
        if not a & WRITER:
            raise RuntimeError(f"slot {i}: unlock() without holding it exclusively")
        a &= ~WRITER
        self.attr[i] = a
        if a & WAITERS:
            self._grant(i)

    def unlock_shared(self, i: int) -> None:
        """Release one read share; hand over to waiters that can now go.

        Usually that is a writer once the last reader leaves; a reader queued
        only because the reader count was saturated goes as soon as one leaves.
        """
        a = self.attr[i]
        if not a & READER_MASK:
            raise RuntimeError(f"slot {i}: unlock_shared() without a read share")
        a -= READER_ONE
        self.attr[i] = a
        if a & WAITERS:
            self._grant(i)

    @asynccontextmanager
    async def exclusive(self, i: int) -> AsyncIterator[None]:
        await self.lock(i)
        try:
            yield
        finally:
            self.unlock(i)

    @asynccontextmanager
    async def shared(self, i: int) -> AsyncIterator[None]:
        await self.lock_shared(i)
        try:
            yield
        finally:
            self.unlock_shared(i)

    def waiting(self, i: int) -> int:
        """Number of tasks queued on slot ``i`` (0 for an uncontended slot)."""
        q = self._queues.get(i)
        return len(q) if q else 0

    @property
    def contended_slots(self) -> int:
        """How many wait queues exist right now (leak check for tests)."""
        return len(self._queues)

    @property
    def queued_tasks(self) -> int:
        """How many tasks wait on any slot right now (0 when the device is quiet)."""
        return sum(len(q) for q in self._queues.values())

    # -- slow path ----------------------------------------------------------

    async def _wait(self, i: int, mode: int) -> None:
        q = self._queues.get(i)
        if q is None:
            q = self._queues[i] = deque()
            self.attr[i] |= WAITERS
        waiter = _Waiter(trio.lowlevel.current_task(), mode)
        q.append(waiter)
        st = self.stats
        st.contended += 1
        if len(q) > st.max_queue:
            st.max_queue = len(q)

        def abort(_: object) -> trio.lowlevel.Abort:
            # Still queued, so nothing was granted: leave and let whoever
            # queued behind us re-check (a cancelled writer may have been the
            # only thing keeping readers out).
            q.remove(waiter)
            st.cancelled_waits += 1
            self._grant(i)
            return trio.lowlevel.Abort.SUCCEEDED

        start = trio.current_time()
        try:
            await trio.lowlevel.wait_task_rescheduled(abort)
            # Granted by _grant(): the lock bits were set on our behalf.
        finally:
            st._waited(start)

    def _grant(self, i: int) -> None:
        """Hand slot ``i`` to the head of its queue (and following readers)."""
        q = self._queues.get(i)
        if q is None:
            return
        a = self.attr[i]
        while q:
            head = q[0]
            if head.mode == _EXCLUSIVE:
                if a & (WRITER | READER_MASK):
                    break
                a |= WRITER
            else:
                if a & WRITER or (a & READER_MASK) == READER_MASK:
                    break
                a += READER_ONE
            q.popleft()
            self.stats.acquired += 1
            trio.lowlevel.reschedule(head.task)
            if head.mode == _EXCLUSIVE:
                break
        if not q:
            del self._queues[i]
            a &= ~WAITERS
        self.attr[i] = a


class DevLock:
    """The device-level reader-writer lock (the kernel's ``dev_lock`` rwsem).

    I/O, statistics, ``idle``, ``compact``, ``recompress`` and ``writeback``
    take it shared (the last two serialize among themselves on the device's
    post-processing lock, so I/O keeps flowing while they run); ``disksize``,
    ``reset`` and algorithm changes take it exclusively, so they wait for
    in-flight requests and post-processing.  Same hand-off and fairness rules
    as `EntryLocks`, on a one-word table; at most `MAX_READERS` shared holders
    at once (the FUSE kernel module keeps far fewer requests in flight), more
    simply queue.
    """

    __slots__ = ("_locks", "words", "stats", "try_read", "release_read")

    def __init__(self) -> None:
        # `words` (the lock's one-word table) and `stats` are read, and
        # stats.acquired counted, by the C read fast path
        # (`zramfs._zpages.read_nowait`), which serves a read only when
        # `try_read` would grant a share.
        self.words: list[int] = [0]
        self._locks = EntryLocks(self.words)
        self.stats: LockStats = self._locks.stats
        # The 4 KiB data path's form of ``async with read():`` — no guard
        # object, no ``__aenter__``/``__aexit__`` coroutines, and C-level
        # partials instead of Python frames (docs/profile.md, "4 KiB
        # requests"):  ``if not dl.try_read(): await dl.wait_read()``, then
        # ``try: ... finally: dl.release_read()``.  `try_read` takes a share
        # exactly when `EntryLocks.lock_shared` would without waiting.
        self.try_read: Callable[[], bool] = partial(self._locks.try_lock_shared, 0)
        self.release_read: Callable[[], None] = partial(self._locks.unlock_shared, 0)

    def read(self) -> _DevGuard:
        return _DevGuard(self._locks, shared=True)

    def write(self) -> _DevGuard:
        return _DevGuard(self._locks, shared=False)

    async def wait_read(self) -> None:
        """Queue for a share after `try_read` failed (cancellable; nothing held if cancelled)."""
        await self._locks.lock_shared(0)

    @property
    def locked_exclusive(self) -> bool:
        return self._locks.holds_writer(0)

    @property
    def queued_tasks(self) -> int:
        """How many tasks wait for the device lock right now."""
        return self._locks.waiting(0)


class _DevGuard:
    """``async with dev.dev_lock.read():`` without a generator's overhead."""

    __slots__ = ("_locks", "_shared")

    def __init__(self, locks: EntryLocks, shared: bool) -> None:
        self._locks = locks
        self._shared = shared

    async def __aenter__(self) -> None:
        if self._shared:
            await self._locks.lock_shared(0)
        else:
            await self._locks.lock(0)

    async def __aexit__(self, *exc: object) -> None:
        if self._shared:
            self._locks.unlock_shared(0)
        else:
            self._locks.unlock(0)
