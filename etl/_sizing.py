"""How large each of the loader's write transactions is.

The size aims at a target hold time from the insert rate just measured,
within bounds: at least one chunk, at most `MAX_TXN_ROWS` rows and
`MAX_TXN_BYTES` bytes of parsed rows.
"""

from __future__ import annotations

from .defaults import DEFAULT_CHUNK_ROWS

__all__ = ["FIRST_TXN_CHUNKS", "MAX_TXN_BYTES", "MAX_TXN_ROWS", "next_txn_rows"]

# The first transaction's size in chunks, before any rate is measured: the
# largest, which held 0.45 s here (four chunks were 7% slower overall, as
# half-million-row commits are written twice); MAX_TXN_BYTES bounds it.
FIRST_TXN_CHUNKS = 8
# The largest transaction, whatever the rate. Its parsed rows wait in
# memory, so this bounds the loader's memory; eight row groups is also about
# where DuckDB's insert stops getting faster per row.
MAX_TXN_ROWS = 8 * DEFAULT_CHUNK_ROWS
# And at most this many bytes of parsed rows: wide rows (long descriptions)
# make a shorter transaction, not a bigger process.
MAX_TXN_BYTES = 128 * 1024 * 1024


def next_txn_rows(
    current: int, rows: int, held: float, *, target: float, smallest: int, largest: int
) -> int:
    """Rows for the next transaction, from the last one's `rows` and `held` s.

    Aims at `target` seconds at the rate just seen, moving halfway from
    `current` so one slow commit (a checkpoint, a busy disk) does not halve
    the next; a write of under half of `smallest` rows is mostly fixed
    costs and tells nothing of the rate, so it leaves the size alone.
    """
    if rows < smallest // 2 or held <= 0:
        return current
    aim = rows / held * target
    return int(max(smallest, min((current + aim) / 2, largest)))
