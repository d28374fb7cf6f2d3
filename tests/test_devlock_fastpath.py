"""DevLock's data-path form (``try_read`` / ``wait_read`` / ``release_read``): same rules
as ``async with dev_lock.read()`` — readers share, a held or queued writer keeps them out,
FIFO hand-off, and a cancelled wait holds nothing."""

from __future__ import annotations

import trio
import trio.testing

from zramfs.core.entrylock import DevLock


async def test_readers_share_without_waiting() -> None:
    dl = DevLock()
    assert dl.try_read()
    assert dl.try_read()
    assert dl.stats.acquired == 2
    dl.release_read()
    dl.release_read()
    async with dl.write():  # nobody left holding a share
        assert dl.locked_exclusive


async def test_writer_held_or_queued_keeps_readers_out_in_order() -> None:
    dl = DevLock()
    order: list[str] = []

    async def reader(name: str) -> None:
        if not dl.try_read():
            await dl.wait_read()
        try:
            order.append(name)
            await trio.sleep(0)
        finally:
            dl.release_read()

    async def writer() -> None:
        async with dl.write():
            order.append("w")

    assert dl.try_read()  # a request in flight
    async with trio.open_nursery() as n:
        n.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert not dl.try_read()  # a writer waits: newcomers queue behind it
        n.start_soon(reader, "r")
        await trio.testing.wait_all_tasks_blocked()
        assert order == [] and dl.queued_tasks == 2
        dl.release_read()
    assert order == ["w", "r"]
    assert dl.try_read()
    dl.release_read()


async def test_cancelled_wait_holds_nothing() -> None:
    dl = DevLock()
    async with dl.write():
        with trio.move_on_after(0.01) as scope:
            await dl.wait_read()
        assert scope.cancelled_caught
        assert dl.queued_tasks == 0 and dl.stats.cancelled_waits == 1
    async with dl.write():  # no share was left behind
        pass
    assert dl.try_read()
    dl.release_read()
