"""`python -m bench.run [--quick]`: fluxion against its plain alternatives.

The run itself lives in `bench.harness`; this module stays light because
the contending processes of measure 1 are spawned and import it again.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

log = logging.getLogger("bench")

RESULTS = Path(__file__).resolve().parent / "results"
# The machine's PostgreSQL (trust auth), database `test`; loopback only.
DEFAULT_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="fluxion measured side by side with its plain alternatives.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every measure at 1M rows at most (under 3 minutes)",
    )
    parser.add_argument(
        "--scale",
        choices=("full", "quick", "smoke"),
        default="full",
        help=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--etl-only",
        action="store_true",
        help="measure 2 alone: the ETL against bare DuckDB and PostgreSQL COPY",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--pg", default=DEFAULT_DSN, help="PostgreSQL DSN (loopback)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    log.setLevel(logging.INFO)

    from .harness import run
    from .report import summary_table
    from .scale import scale_named

    scale = scale_named("quick" if args.quick else args.scale)
    res = run(scale, args.out, args.pg, etl_only=args.etl_only)
    print("\n".join(summary_table(res)))
    print(f"\n{args.out / 'report.md'}: run took {res.value('run.seconds'):.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
