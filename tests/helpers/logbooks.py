"""Logbooks compared between runs of one seed: every column but the timing (``utilisation``)."""

from __future__ import annotations

import csv
from pathlib import Path

TIMING = ("utilisation",)


def records(logbook) -> list[dict]:
    """A DEAP logbook's records without the timing keys."""
    return [{key: value for key, value in record.items() if key not in TIMING} for record in logbook]


def csv_rows(path: Path) -> list[dict]:
    """``logbook.csv``'s rows without the timing columns."""
    rows = list(csv.DictReader(Path(path).read_text().splitlines()))
    return [{key: value for key, value in row.items() if key not in TIMING} for row in rows]
