"""Counters behind ``mm_stat``, ``io_stat``, ``bd_stat``, ``debug_stat`` and ``stat``.

Plain attribute bags with ``__slots__``: the data path bumps them inline on the
trio thread (no atomics needed: one thread mutates them), and ``reset`` zeroes
them in one call, as the kernel's ``memset(&zram->stats, 0, ...)``.
"""

from __future__ import annotations


class ZramStats:
    """``struct zram_stats``."""

    __slots__ = (
        "compr_data_size",
        "failed_reads",
        "failed_writes",
        "notify_free",
        "same_pages",
        "huge_pages",
        "huge_pages_since",
        "pages_stored",
        "max_used_pages",
        "miss_free",
        "bd_count",
        "bd_reads",
        "bd_writes",
    )

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    compr_data_size: int
    failed_reads: int
    failed_writes: int
    notify_free: int
    same_pages: int
    huge_pages: int
    huge_pages_since: int
    pages_stored: int
    max_used_pages: int
    miss_free: int
    bd_count: int
    bd_reads: int
    bd_writes: int


class BlockStat:
    """The block layer's per-disk counters (``/sys/block/zramN/stat``, 17 fields).

    Ticks are milliseconds spent on requests of each kind, as ``part_stat``
    accounts them; ``io_ticks`` is wall time with at least one request in
    flight and ``time_in_queue`` the sum of all requests' durations.
    """

    __slots__ = (
        "read_ios", "read_merges", "read_sectors", "read_ticks",
        "write_ios", "write_merges", "write_sectors", "write_ticks",
        "in_flight", "io_ticks", "time_in_queue",
        "discard_ios", "discard_merges", "discard_sectors", "discard_ticks",
        "flush_ios", "flush_ticks",
        "_busy_since_ns",
    )  # fmt: skip

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    read_ios: int
    read_merges: int
    read_sectors: int
    read_ticks: int
    write_ios: int
    write_merges: int
    write_sectors: int
    write_ticks: int
    in_flight: int
    io_ticks: int
    time_in_queue: int
    discard_ios: int
    discard_merges: int
    discard_sectors: int
    discard_ticks: int
    flush_ios: int
    flush_ticks: int
    _busy_since_ns: int

    def start(self, now_ns: int) -> None:
        if self.in_flight == 0:
            self._busy_since_ns = now_ns
        self.in_flight += 1

    def done(self, now_ns: int, started_ns: int) -> int:
        """Close one request; returns its duration in ms for the per-kind ticks."""
        self.in_flight -= 1
        ms = (now_ns - started_ns) // 1_000_000
        self.time_in_queue += ms
        if self.in_flight == 0:
            self.io_ticks += (now_ns - self._busy_since_ns) // 1_000_000
        return ms

    def read_done(self, now_ns: int, started_ns: int, nbytes: int) -> None:
        """Close one read of ``nbytes``."""
        self.read_ticks += self.done(now_ns, started_ns)
        self.read_ios += 1
        self.read_sectors += nbytes >> 9

    def write_done(self, now_ns: int, started_ns: int, nbytes: int) -> None:
        """Close one write of ``nbytes``."""
        self.write_ticks += self.done(now_ns, started_ns)
        self.write_ios += 1
        self.write_sectors += nbytes >> 9

    def format(self) -> bytes:
        """``part_stat_show``: 17 fields, ``%8lu``-style, one space apart."""
        fields = (
            self.read_ios, self.read_merges, self.read_sectors, self.read_ticks,
            self.write_ios, self.write_merges, self.write_sectors, self.write_ticks,
            self.in_flight, self.io_ticks, self.time_in_queue,
            self.discard_ios, self.discard_merges, self.discard_sectors, self.discard_ticks,
            self.flush_ios, self.flush_ticks,
        )  # fmt: skip
        return (" ".join(f"{v:8d}" for v in fields) + "\n").encode()
