"""The loader's tunable defaults, importable without DuckDB or Arrow.

The command line shows them in its help, so they live apart from the
modules that need the heavy libraries.
"""

from __future__ import annotations

# One DuckDB row group: the unit of parsing and of batch identity.
DEFAULT_CHUNK_ROWS = 122_880
# How long one write transaction should hold the file: what a backend that
# starts waiting mid-transaction waits, at most, for its turn. Half a second
# lets a transaction reach about a million rows here, the size at which
# DuckDB writes finished row groups straight into the file.
DEFAULT_TARGET_HOLD = 0.5
# A write turn lasts at least this long before it yields to a waiter, so
# small chunks (a small store's day) do not pay a file open per chunk.
DEFAULT_MIN_TURN = 0.25
# How long one write turn may be waited for before the load stops with a
# report; a batch job waits patiently behind interactive work.
DEFAULT_WAIT = 600.0
# DuckDB's memory budget in a loader's process. Without one, the blocks a
# long load writes stay cached and the process grows with the input (about
# 19 MB per million rows here). 128MB keeps it flat; 64MB was 8% slower on
# 8M rows, 256MB 5% faster for 130MB more.
DEFAULT_MEMORY_LIMIT = "128MB"
