"""Reading an interaction log and validating it.

Every error names the source, the column and the first offending rows, so a user can fix the file.
Row numbers are the file's line numbers for CSV/TSV (header = line 1) and 0-based row positions for
Parquet files and DataFrames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from seqrec.errors import DataError

_CSV_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": None}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
_SHOW = 5  # offending rows quoted in an error


def load_frame(source, columns: dict[str, str], sep: str | None = None) -> tuple[pd.DataFrame, str, int]:
    """Read the three columns of ``source`` (path or DataFrame).

    Returns the frame (columns renamed to ``user``, ``item``, ``time``), a display name, and the
    offset to add to a 0-based row position to get the number shown in errors.
    """
    if isinstance(source, pd.DataFrame):
        name, offset = "<DataFrame>", 0
        _require_columns(list(source.columns), columns, name)
        frame = source[list(columns.values())].reset_index(drop=True)
    else:
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise DataError(f"{name}: no such file")
        suffixes = [s.lower() for s in path.suffixes]
        suffix = suffixes[-2] if suffixes and suffixes[-1] in {".gz", ".bz2", ".zst", ".xz"} and len(suffixes) > 1 \
            else (suffixes[-1] if suffixes else "")
        if suffix in _PARQUET_SUFFIXES:
            offset = 0
            import pyarrow.parquet as pq

            header = pq.read_schema(path).names
            _require_columns(header, columns, name)
            frame = pd.read_parquet(path, columns=list(columns.values()))
        elif suffix in _CSV_SUFFIXES:
            offset = 2  # header is line 1
            delimiter = sep or _CSV_SUFFIXES[suffix]
            try:
                header = list(pd.read_csv(path, sep=delimiter, nrows=0, engine="python" if delimiter is None else "c"))
            except pd.errors.EmptyDataError:
                raise DataError(f"{name}: empty file (no header, no interactions)") from None
            _require_columns(header, columns, name)
            try:
                frame = pd.read_csv(path, sep=delimiter, usecols=list(columns.values()),
                                    engine="python" if delimiter is None else "c")
            except (pd.errors.ParserError, UnicodeDecodeError) as exc:
                raise DataError(f"{name}: cannot parse: {exc}") from None
        else:
            raise DataError(f"{name}: unknown file type {suffix or '(none)'!r}; "
                            f"choose from {sorted(_CSV_SUFFIXES) + sorted(_PARQUET_SUFFIXES)} (optionally .gz)")
    frame = frame.rename(columns={v: k for k, v in columns.items()})
    return frame, name, offset


def validate(frame: pd.DataFrame, columns: dict[str, str], name: str, offset: int) -> pd.DataFrame:
    """Check for emptiness, null ids and bad timestamps; return a frame with numeric ``time``."""
    if len(frame) == 0:
        raise DataError(f"{name}: no interactions (the input has a header but no rows)")
    for key in ("user", "item"):
        bad = frame[key].isna().to_numpy()
        if bad.any():
            raise DataError(_rows_message(name, columns[key], "null ids", bad, offset))
    frame = frame.copy()
    frame["time"] = _numeric_time(frame["time"], name, columns["time"], offset)
    return frame


def _numeric_time(col: pd.Series, name: str, column: str, offset: int, label: str | None = None) -> np.ndarray:
    """Numeric timestamps stay as they are; datetime strings become float seconds since the epoch (UTC)."""
    if col.isna().any():
        raise DataError(_rows_message(name, column, "missing timestamps", col.isna().to_numpy(), offset, label=label))
    if pd.api.types.is_bool_dtype(col):
        raise DataError(f"{name}: column {column!r} holds booleans, not timestamps")
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy()
    if pd.api.types.is_datetime64_any_dtype(col):
        parsed = pd.to_datetime(col, utc=True)
    else:
        text = col.astype(str)
        numeric = pd.to_numeric(text, errors="coerce")
        if numeric.notna().all():
            return numeric.to_numpy()
        parsed = pd.to_datetime(text, utc=True, errors="coerce")
        retry = parsed.isna()
        if retry.any():  # several formats in one column: parse the rest element by element
            parsed[retry] = pd.to_datetime(text[retry], utc=True, errors="coerce", format="mixed")
        bad = parsed.isna().to_numpy()
        if bad.any():
            raise DataError(_rows_message(name, column, "unparsable timestamps", bad, offset, col, label))
    return (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()


def _require_columns(header: list, columns: dict[str, str], name: str) -> None:
    missing = [c for c in columns.values() if c not in header]
    if missing:
        raise DataError(f"{name}: missing column(s) {missing}; the input has columns {list(header)} "
                        f"(map yours with --user-col/--item-col/--time-col or user=/item=/time=)")


def _rows_message(name, column, what, bad: np.ndarray, offset: int, values: pd.Series | None = None,
                  label: str | None = None) -> str:
    where = np.flatnonzero(bad)
    label = label or ("line" if offset else "row")
    shown = []
    for i in where[:_SHOW]:
        shown.append(f"{label} {i + offset}" + (f" ({values.iloc[i]!r})" if values is not None else ""))
    more = f" and {len(where) - _SHOW} more" if len(where) > _SHOW else ""
    return f"{name}: column {column!r} has {len(where)} {what}: {', '.join(shown)}{more}"
