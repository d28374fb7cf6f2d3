"""The kernel's LZ4 block compression of a small input, in plain Python: the tests' reference.

zram's lz4 backend calls the kernel's ``LZ4_compress_fast`` (lib/lz4, an LZ4
1.8 port) with room for the worst case, so a page under 64 KiB is parsed
greedily with a 16-bit hash table of 8192 entries.  ``zramfs._zpages``
implements that parse in C (``kz_compress``); this is a second, independent
implementation of the same rules, written for reading rather than speed, so the
C can be checked against it on any input (and both against ``/dev/zram0``,
``tests/test_fidelity.py``):

* the hash of a position is its 4 little-endian bytes times 2654435761, top
  13 bits; the table holds offsets and starts zeroed (an empty entry points at
  offset 0, which is then compared like any other candidate);
* looking for a match, the step starts at 1 and grows by one every 64
  candidates (the count starts at ``acceleration << 6``, in 32 bits: it
  wraps; where it wraps to less than one step the kernel writes corrupt
  blocks, and we use acceleration 65537 instead); every position looked at
  is entered in the table; no match starts past ``len - 12``;
* a match is extended backwards over equal bytes (not before the literals'
  start, not before offset 0) and forwards up to ``len - 5``;
* after a match, positions ``ip - 2`` and ``ip`` are entered, and ``ip`` is
  tried as the next match at once (a sequence with no literals);
* what is left is one run of literals.
"""

from __future__ import annotations

MFLIMIT = 12
LASTLITERALS = 5
HASHLOG = 13
SKIPTRIGGER = 6
MAX_INPUT = 65535


def _hash(src: bytes, i: int) -> int:
    return ((int.from_bytes(src[i : i + 4], "little") * 2654435761) & 0xFFFFFFFF) >> (32 - HASHLOG)


def _length(out: bytearray, n: int) -> None:
    """A length's extra bytes after its 4-bit field."""
    while n >= 255:
        out.append(255)
        n -= 255
    out.append(n)


def _token_len(n: int) -> tuple[int, int | None]:
    """(4-bit field, extra length or None)."""
    return (15, n - 15) if n >= 15 else (n, None)


def compress(src: bytes, acceleration: int = 1) -> bytes:
    """One raw LZ4 block of ``src`` (at most 64 KiB - 1), as the kernel makes it."""
    n = len(src)
    if n > MAX_INPUT:
        raise ValueError("the 16-bit table covers inputs up to 65535 bytes")
    acc = max(acceleration, 1)
    if ((acc << SKIPTRIGGER) & 0xFFFFFFFF) >> SKIPTRIGGER == 0:
        # The kernel's 32-bit search counter wraps below one step (acc a
        # multiple of 2**26): its search stands still and writes matches at
        # offset 0, a corrupt block.  LZ4's maximum (65537) instead.
        acc = 65537
    out = bytearray()
    anchor = 0
    if n >= MFLIMIT + 1:
        mflimit = n - MFLIMIT
        matchlimit = n - LASTLITERALS
        table = [0] * (1 << HASHLOG)

        def same4(a: int, b: int) -> bool:
            return src[a : a + 4] == src[b : b + 4]

        def emit(lits: int, match: int, ip: int) -> int:
            """A sequence: literals src[anchor:lits end], the match at ip; returns ip after it."""
            field, extra = _token_len(lits)
            token_at = len(out)
            out.append(field << 4)
            if extra is not None:
                _length(out, extra)
            out.extend(src[ip - lits : ip])
            out.extend((ip - match).to_bytes(2, "little"))
            m = 0
            while ip + 4 + m < matchlimit and src[ip + 4 + m] == src[match + 4 + m]:
                m += 1
            f, e = _token_len(m)
            out[token_at] |= f
            if e is not None:
                _length(out, e)
            return ip + 4 + m

        ip = 1
        while True:
            # Search.
            step = 1
            tries = (acc << SKIPTRIGGER) & 0xFFFFFFFF
            nxt = ip
            while True:
                ip = nxt
                nxt = ip + step
                step = tries >> SKIPTRIGGER
                tries = (tries + 1) & 0xFFFFFFFF
                if nxt > mflimit:
                    break
                h = _hash(src, ip)
                match = table[h]
                table[h] = ip
                if same4(match, ip):
                    break
            if nxt > mflimit:
                break
            while ip > anchor and match > 0 and src[ip - 1] == src[match - 1]:
                ip -= 1
                match -= 1
            ip = emit(ip - anchor, match, ip)
            anchor = ip
            done = False
            while True:
                if ip > mflimit:
                    done = True
                    break
                table[_hash(src, ip - 2)] = ip - 2
                h = _hash(src, ip)
                match = table[h]
                table[h] = ip
                if not same4(match, ip):
                    break
                ip = emit(0, match, ip)
                anchor = ip
            if done:
                break
            ip += 1
    run = n - anchor
    field, extra = _token_len(run)
    out.append(field << 4)
    if extra is not None:
        _length(out, extra)
    out += src[anchor:]
    return bytes(out)
