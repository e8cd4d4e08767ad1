"""Reading reference data from CSV, JSON Lines and Parquet files, or a profile JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from numpy.typing import NDArray

from monitor.exceptions import ReferenceError
from monitor.reference import ReferenceProfile

__all__ = ["SUPPORTED_SUFFIXES", "read_columns", "read_profile"]

SUPPORTED_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet", ".json")


def read_columns(path: str | Path) -> dict[str, NDArray[Any]]:
    """Columns of a reference file: float64 (NaN = missing) or object (None = missing).

    Empty CSV cells and JSON nulls are missing values.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            table = pacsv.read_csv(
                p, convert_options=pacsv.ConvertOptions(strings_can_be_null=True)
            )
        elif suffix in (".jsonl", ".ndjson"):
            table = pajson.read_json(p)
        elif suffix == ".parquet":
            table = pq.read_table(p)
        else:
            raise ReferenceError(
                f"{p}: unsupported reference file type {suffix!r}; use "
                + ", ".join(SUPPORTED_SUFFIXES)
            )
    except (OSError, pa.ArrowException) as exc:
        raise ReferenceError(f"{p}: cannot read reference data: {exc}") from exc
    return {name: _column(table.column(name)) for name in table.column_names}


def _column(column: pa.ChunkedArray) -> NDArray[Any]:
    t = column.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return np.asarray(
            column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
        )
    values = column.to_pylist()
    out = np.empty(len(values), dtype=object)
    out[:] = [None if v is None else (str(v) if not isinstance(v, str) else v) for v in values]
    return out


def read_profile(path: str | Path) -> ReferenceProfile:
    """A profile JSON written by ``driftline reference build``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReferenceError(f"{p}: cannot read reference profile: {exc}") from exc
    try:
        return ReferenceProfile.from_dict(data)
    except ReferenceError as exc:
        raise ReferenceError(f"{p}: {exc}") from exc
