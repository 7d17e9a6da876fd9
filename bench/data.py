"""Generated store exports for one run, written once under the run's folder.

Every set is canonical CSV (UTF-8, comma, ISO dates, English header), the
one shape PostgreSQL's COPY reads as it is, so all three loaders read the
very same files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from etl.generate import generate_exports
from etl.loader import expand_paths

from .scale import DataSpec, Scale

__all__ = ["Dataset", "generate_all"]


@dataclass(frozen=True)
class Dataset:
    """One generated set: its folder and its day folders, in date order."""

    spec: DataSpec
    root: Path
    days: tuple[Path, ...]

    def inputs(self, first_day_only: bool = False) -> list[Path]:
        """Folders to hand to a loader (all days, or the first only)."""
        return [self.days[0]] if first_day_only else [self.root]

    def files(self, first_day_only: bool = False) -> list[Path]:
        return expand_paths(self.inputs(first_day_only))


def generate_all(scale: Scale, workdir: Path) -> tuple[dict[str, Dataset], float]:
    """Write every dataset of the scale; returns them and the seconds spent."""
    started = time.monotonic()
    sets: dict[str, Dataset] = {}
    for seed, spec in enumerate(scale.datasets, start=11):
        root = workdir / "exports" / spec.key
        generate_exports(
            root,
            stores=spec.stores,
            start=spec.start,
            ndays=spec.days,
            rows_per_store=spec.rows_per_store,
            seed=seed,
            formats="canonical",
        )
        days = tuple(sorted(p for p in root.iterdir() if p.is_dir()))
        sets[spec.key] = Dataset(spec, root, days)
    return sets, time.monotonic() - started
