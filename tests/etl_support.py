"""Helpers shared by the ETL tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from etl.loader import expand_paths
from etl.parallel import load_files
from lockmanager import LeaseConfig


def load_report(
    paths: list[Path], redis_url: str, db: Path, prefix: str, **kwargs: Any
) -> dict[str, Any]:
    """`fluxion etl load` of `paths` into `db`, as its JSON report."""
    return load_files(
        expand_paths(paths),
        redis_url=redis_url,
        db_path=str(db),
        config=LeaseConfig(key_prefix=prefix),
        **kwargs,
    ).as_dict()


def read_one(db: Path, sql: str) -> tuple[Any, ...]:
    """The one row `sql` gives, read from the file with a read-only open."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        row = con.execute(sql).fetchone()
    finally:
        con.close()
    assert row is not None
    return row
