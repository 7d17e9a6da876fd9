"""The ETL's report: per file, and merged over files and workers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

QUARANTINE_SAMPLE = 3


@dataclass
class FileReport:
    """What happened to one file; `reconciled` checks its row accounting."""

    path: str
    sha256: str = ""
    format: str = ""
    status: str = "pending"  # loaded | skipped | rejected
    reason: str = ""
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rows_skipped: int = 0
    chunks: int = 0
    store_day: tuple[int, Any] | None = None
    replaces: str = ""
    day_seen: bool = False  # a chunk with good rows has set store_day
    # The first few quarantined rows, "line N: reason", for the summary.
    quarantine_sample: list[str] = field(default_factory=list)

    def note_quarantined(self, rows: Iterable[Any]) -> None:
        """Keep the first `QUARANTINE_SAMPLE` quarantined rows' line and reason."""
        for row in rows:
            if len(self.quarantine_sample) >= QUARANTINE_SAMPLE:
                return
            self.quarantine_sample.append(f"line {row.line}: {row.reason}")

    def reset(self) -> None:
        """Forget the counts, before the file is read again from the start."""
        self.quarantine_sample = []
        self.rows_read = self.rows_loaded = self.rows_rejected = 0
        self.rows_skipped = self.chunks = 0
        self.status, self.store_day, self.replaces = "pending", None, ""
        self.day_seen = False

    @property
    def reconciled(self) -> bool:
        accounted = self.rows_loaded + self.rows_rejected + self.rows_skipped
        return self.rows_read == accounted


@dataclass
class LoadReport:
    """The ETL's JSON report (DESIGN.md field names)."""

    files: list[FileReport] = field(default_factory=list)
    lock_errors: int = 0
    lock_wait_s: float = 0.0
    turns: int = 0
    degraded_turns: int = 0
    leases_lost: int = 0
    interrupted: str = ""
    elapsed_s: float = 0.0
    transactions: int = 0
    longest_hold_s: float = 0.0
    yields: int = 0  # turns given up early because someone waited

    def total(self, name: str) -> int:
        return sum(getattr(f, name) for f in self.files)

    def merge(self, other: LoadReport) -> None:
        self.files += other.files
        self.lock_errors += other.lock_errors
        self.lock_wait_s += other.lock_wait_s
        self.turns += other.turns
        self.degraded_turns += other.degraded_turns
        self.leases_lost += other.leases_lost
        self.transactions += other.transactions
        self.yields += other.yields
        self.longest_hold_s = max(self.longest_hold_s, other.longest_hold_s)
        self.interrupted = self.interrupted or other.interrupted

    def as_dict(self) -> dict[str, Any]:
        loaded = self.total("rows_loaded")
        return {
            "files": len(self.files),
            "files_loaded": sum(f.status == "loaded" for f in self.files),
            "files_skipped": sum(f.status == "skipped" for f in self.files),
            "rows_read": self.total("rows_read"),
            "rows_loaded": loaded,
            "rows_rejected": self.total("rows_rejected"),
            "rows_skipped": self.total("rows_skipped"),
            "files_rejected": [
                {"path": f.path, "reason": f.reason}
                for f in self.files
                if f.status == "rejected"
            ],
            "files_replaced": [
                {
                    "path": f.path,
                    "replaced_file_sha256": f.replaces,
                    "store": f.store_day[0] if f.store_day else None,
                    "day": str(f.store_day[1]) if f.store_day else None,
                }
                for f in self.files
                if f.replaces and f.status == "loaded"
            ],
            "lock_errors": self.lock_errors,
            "lock_wait_s": round(self.lock_wait_s, 3),
            "write_turns": self.turns,
            "turns_yielded": self.yields,
            "degraded_turns": self.degraded_turns,
            "leases_lost": self.leases_lost,
            "write_transactions": self.transactions,
            "longest_transaction_s": round(self.longest_hold_s, 3),
            "interrupted": self.interrupted or None,
            "elapsed_s": round(self.elapsed_s, 3),
            "rows_per_s": round(loaded / self.elapsed_s) if self.elapsed_s else 0,
            "reconciled": all(f.reconciled for f in self.files),
            "per_file": [
                {
                    "path": f.path,
                    "format": f.format,
                    "status": f.status,
                    "rows_read": f.rows_read,
                    "rows_loaded": f.rows_loaded,
                    "rows_rejected": f.rows_rejected,
                    "rows_skipped": f.rows_skipped,
                    "quarantine_sample": f.quarantine_sample,
                    "reconciled": f.reconciled,
                }
                for f in self.files
            ],
        }
