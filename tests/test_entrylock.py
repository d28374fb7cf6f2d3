"""The preemptible entry lock: modes, hand-off order, try-lock, cancellation."""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from zramfs.core.entrylock import (
    LOCK_MASK,
    MAX_READERS,
    READER_MASK,
    WAITERS,
    WRITER,
    DevLock,
    EntryLocks,
)

OTHER_BITS = 0xFFFF_FFFF_0000_0000 | 0x1FFFFF  # flags/size/actime that must survive


def make(n: int = 4) -> EntryLocks:
    return EntryLocks([OTHER_BITS] * n)


async def test_uncontended_is_synchronous_and_keeps_other_bits() -> None:
    locks = make()
    await locks.lock(1)
    assert locks.attr[1] == OTHER_BITS | WRITER
    assert not locks.try_lock(1)
    assert not locks.try_lock_shared(1)
    locks.unlock(1)
    assert locks.attr[1] == OTHER_BITS
    await locks.lock_shared(2)
    await locks.lock_shared(2)
    assert (locks.attr[2] & READER_MASK) >> 23 == 2
    assert not locks.try_lock(2)
    locks.unlock_shared(2)
    locks.unlock_shared(2)
    assert locks.attr[2] == OTHER_BITS
    assert locks.contended_slots == 0


async def test_unlock_without_holding_raises() -> None:
    locks = make()
    for fn in (locks.unlock, locks.unlock_shared):
        try:
            fn(0)
        except RuntimeError:
            pass
        else:
            raise AssertionError("unlock of a free slot must raise")


async def test_writer_excludes_and_hands_off_in_fifo_order() -> None:
    locks = make()
    order: list[str] = []
    await locks.lock(0)

    async def writer(name: str) -> None:
        await locks.lock(0)
        order.append(name)
        await trio.sleep(0.01)
        locks.unlock(0)

    async with trio.open_nursery() as n:
        for name in "abc":
            n.start_soon(writer, name)
            await trio.testing.wait_all_tasks_blocked()
        assert locks.waiting(0) == 3
        assert locks.attr[0] & WAITERS
        locks.unlock(0)
    assert order == ["a", "b", "c"]
    assert locks.attr[0] == OTHER_BITS
    assert locks.contended_slots == 0


async def test_readers_share_but_queue_behind_a_waiting_writer() -> None:
    """Writers are not starved: a reader arriving after a queued writer waits."""
    locks = make()
    events: list[str] = []
    await locks.lock_shared(0)  # a long-running reader holds the slot

    async def writer() -> None:
        await locks.lock(0)
        events.append("w")
        await trio.sleep(0.01)
        locks.unlock(0)

    async def reader(name: str) -> None:
        await locks.lock_shared(0)
        events.append(name)
        await trio.sleep(0.01)
        locks.unlock_shared(0)

    async with trio.open_nursery() as n:
        n.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(reader, "r1")
        n.start_soon(reader, "r2")
        await trio.testing.wait_all_tasks_blocked()
        # Both readers could share with the holder, but the writer is queued.
        assert events == []
        assert locks.waiting(0) == 3
        locks.unlock_shared(0)
    assert events[0] == "w"
    assert sorted(events[1:]) == ["r1", "r2"]


async def test_consecutive_readers_are_granted_together() -> None:
    locks = make()
    await locks.lock(0)
    inside = 0
    peak = 0

    async def reader() -> None:
        nonlocal inside, peak
        await locks.lock_shared(0)
        inside += 1
        peak = max(peak, inside)
        await trio.sleep(0.01)
        inside -= 1
        locks.unlock_shared(0)

    async with trio.open_nursery() as n:
        for _ in range(5):
            n.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        locks.unlock(0)
    assert peak == 5


async def test_cancel_while_waiting_leaks_nothing_and_unblocks_followers() -> None:
    """A cancelled writer leaves the queue; readers behind it may now share."""
    locks = make()
    await locks.lock_shared(0)
    got: list[str] = []

    async def reader() -> None:
        await locks.lock_shared(0)
        got.append("r")
        locks.unlock_shared(0)

    async with trio.open_nursery() as n:
        cancel = trio.CancelScope()

        async def writer() -> None:
            with cancel:
                await locks.lock(0)
                got.append("w-should-not-run")

        n.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        cancel.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["r"]  # granted as soon as the writer left
    assert locks.stats.cancelled_waits == 1
    locks.unlock_shared(0)
    assert locks.attr[0] == OTHER_BITS
    assert locks.contended_slots == 0


async def test_cancel_while_holding_across_await_releases() -> None:
    locks = make()

    async def holder() -> None:
        async with locks.exclusive(3):
            await trio.sleep_forever()

    async with trio.open_nursery() as n:
        n.start_soon(holder)
        await trio.testing.wait_all_tasks_blocked()
        assert locks.is_locked(3)
        n.cancel_scope.cancel()
    assert not locks.is_locked(3)
    assert locks.attr[3] == OTHER_BITS


async def test_try_lock_never_barges_past_waiters() -> None:
    locks = make()
    await locks.lock(0)

    async def waiter() -> None:
        await locks.lock(0)
        locks.unlock(0)

    async with trio.open_nursery() as n:
        n.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        locks.unlock(0)  # handed to the waiter, who has not run yet
        assert not locks.try_lock(0)
    assert locks.try_lock(0)
    locks.unlock(0)


async def test_slow_holder_does_not_stall_other_slots() -> None:
    """The seed's point: holding one slot across an await blocks only that slot."""
    locks = make(8)
    clock_done: list[int] = []

    async def slow() -> None:
        async with locks.exclusive(0):
            await trio.sleep(1)

    async with trio.open_nursery() as n:
        n.start_soon(slow)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(0.5):
            for i in range(1, 8):
                async with locks.exclusive(i):
                    clock_done.append(i)
        n.cancel_scope.cancel()
    assert clock_done == list(range(1, 8))


async def test_reader_cap_queues_instead_of_overflowing() -> None:
    locks = make(1)
    for _ in range(MAX_READERS):
        await locks.lock_shared(0)
    assert not locks.try_lock_shared(0)

    async def one_more() -> None:
        await locks.lock_shared(0)

    async with trio.open_nursery() as n:
        n.start_soon(one_more)
        await trio.testing.wait_all_tasks_blocked()
        assert locks.waiting(0) == 1
        locks.unlock_shared(0)
    assert (locks.attr[0] & READER_MASK) == READER_MASK
    for _ in range(MAX_READERS):
        locks.unlock_shared(0)
    assert locks.attr[0] & LOCK_MASK == 0


async def test_devlock_orders_config_against_io() -> None:
    dl = DevLock()
    log: list[str] = []

    async def io(name: str) -> None:
        async with dl.read():
            log.append(name + "+")
            await trio.sleep(0.01)
            log.append(name + "-")

    async def config() -> None:
        async with dl.write():
            log.append("C+")
            await trio.sleep(0.01)
            log.append("C-")

    async with trio.open_nursery() as n:
        n.start_soon(io, "a")
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(config)
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(io, "b")
    assert log == ["a+", "a-", "C+", "C-", "b+", "b-"]


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.integers(0, 2), st.booleans(), st.integers(0, 3), st.booleans()),
        min_size=1,
        max_size=25,
    )
)
def test_random_schedules_keep_the_invariants(ops: list[tuple[int, bool, int, bool]]) -> None:
    """Any mix of readers/writers/cancellations: mutual exclusion, no leak."""

    async def main() -> None:
        locks = make(3)
        holders = [[0, 0] for _ in range(3)]  # [writers, readers] per slot

        async def task(slot: int, exclusive: bool, hold_ticks: int, cancel: bool) -> None:
            with trio.move_on_after(0.001 if cancel else 10):
                if exclusive:
                    async with locks.exclusive(slot):
                        holders[slot][0] += 1
                        try:
                            assert holders[slot] == [1, 0]
                            for _ in range(hold_ticks):
                                await trio.sleep(0)
                        finally:
                            holders[slot][0] -= 1
                else:
                    async with locks.shared(slot):
                        holders[slot][1] += 1
                        try:
                            assert holders[slot][0] == 0
                            for _ in range(hold_ticks):
                                await trio.sleep(0)
                        finally:
                            holders[slot][1] -= 1

        async with trio.open_nursery() as n:
            for op in ops:
                n.start_soon(task, *op)
        assert all(a == OTHER_BITS for a in locks.attr)
        assert locks.contended_slots == 0

    trio.run(main)


# -- LockStats: counters and wait times (the debugfs lock_stat file) ---------

NS = 1_000_000_000


async def test_uncontended_path_counts_acquisitions_only() -> None:
    locks = make()
    await locks.lock(0)
    locks.unlock(0)
    await locks.lock_shared(1)
    await locks.lock_shared(1)
    assert locks.try_lock(2)
    assert not locks.try_lock(2)  # a failed try-lock counts nothing
    locks.unlock(2)
    locks.unlock_shared(1)
    locks.unlock_shared(1)
    assert locks.stats.as_dict() == {
        "acquired": 4,
        "contended": 0,
        "cancelled_waits": 0,
        "max_queue": 0,
        "wait_ns_total": 0,
        "wait_ns_max": 0,
    }
    assert locks.queued_tasks == 0


async def test_wait_times_are_measured_on_the_slow_path(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Holder keeps the slot 1.5 s; a writer and a reader queue at t=0 and t=0.5 s."""
    locks = make()
    got: dict[str, float] = {}
    await locks.lock(0)

    async def waiter(name: str, exclusive: bool) -> None:
        if exclusive:
            await locks.lock(0)
        else:
            await locks.lock_shared(0)
        got[name] = trio.current_time()
        await trio.sleep(2)
        if exclusive:
            locks.unlock(0)
        else:
            locks.unlock_shared(0)

    t0 = trio.current_time()
    async with trio.open_nursery() as n:
        n.start_soon(waiter, "w", True)
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(0.5)
        n.start_soon(waiter, "r", False)
        await trio.testing.wait_all_tasks_blocked()
        assert locks.queued_tasks == 2
        assert locks.stats.max_queue == 2
        await trio.sleep(1)
        locks.unlock(0)
    # w waited 1.5 s (granted at 1.5), r waited from 0.5 until w let go at 3.5: 3 s.
    assert got == {"w": t0 + 1.5, "r": t0 + 3.5}
    s = locks.stats
    assert (s.acquired, s.contended, s.cancelled_waits) == (3, 2, 0)
    assert s.wait_ns_total == 4_500_000_000
    assert s.wait_ns_max == 3 * NS
    assert locks.queued_tasks == 0


async def test_cancelled_wait_is_counted_and_timed(autojump_clock: trio.testing.MockClock) -> None:
    locks = make()
    await locks.lock_shared(3)
    with trio.move_on_after(0.25) as scope:
        await locks.lock(3)
    assert scope.cancelled_caught
    s = locks.stats
    assert (s.contended, s.cancelled_waits) == (1, 1)
    assert s.wait_ns_total == s.wait_ns_max == 250_000_000
    assert locks.queued_tasks == 0 and locks.contended_slots == 0
    locks.unlock_shared(3)


async def test_devlock_stats_and_queue(autojump_clock: trio.testing.MockClock) -> None:
    dl = DevLock()

    async def io() -> None:
        async with dl.read():
            await trio.sleep(1)

    async with trio.open_nursery() as n, dl.write():
        n.start_soon(io)
        n.start_soon(io)
        await trio.testing.wait_all_tasks_blocked()
        assert dl.queued_tasks == 2
        await trio.sleep(2)
    s = dl.stats
    assert (s.acquired, s.contended, s.max_queue) == (3, 2, 2)
    assert s.wait_ns_total == 4 * NS and s.wait_ns_max == 2 * NS
    assert dl.queued_tasks == 0


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.integers(0, 2), st.booleans(), st.integers(0, 3), st.booleans()),
        min_size=1,
        max_size=25,
    )
)
def test_random_schedules_stats_add_up(ops: list[tuple[int, bool, int, bool]]) -> None:
    """Under a mock clock, the counters agree with what the tasks themselves saw:
    every grant counted once, every task that got nothing a cancelled wait, and
    the summed wait time equal to the time tasks spent inside lock calls."""

    async def main() -> None:
        locks = make(3)
        granted = cancelled = 0
        waited: list[float] = []

        async def task(slot: int, exclusive: bool, hold: int, cancel: bool) -> None:
            nonlocal granted, cancelled
            with trio.move_on_after(0.05 if cancel else 1000):
                t0 = trio.current_time()
                got = False
                try:
                    if exclusive:
                        await locks.lock(slot)
                    else:
                        await locks.lock_shared(slot)
                    got = True
                finally:
                    waited.append(trio.current_time() - t0)
                    if got:
                        granted += 1
                    else:
                        cancelled += 1
                try:
                    await trio.sleep(0.1 * hold)
                finally:
                    if exclusive:
                        locks.unlock(slot)
                    else:
                        locks.unlock_shared(slot)

        async with trio.open_nursery() as n:
            for op in ops:
                n.start_soon(task, *op)
        s = locks.stats
        assert s.acquired == granted
        assert s.cancelled_waits == cancelled
        assert s.contended >= cancelled
        assert s.max_queue <= len(ops)
        assert s.wait_ns_max <= s.wait_ns_total
        assert abs(s.wait_ns_total - round(sum(waited) * 1e9)) <= len(ops)  # rounding only
        assert s.wait_ns_max == max(round(w * 1e9) for w in waited)
        assert locks.queued_tasks == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
