"""Interaction logs too large for a DataFrame: a Parquet dataset (one file or a directory of files) read in
record batches, validated, encoded, ordered and filtered in compact arrays, optionally written as memory-mapped
arrays that training reads without loading them.

Memory: the reader never holds a DataFrame of the log. Pass 1 collects the distinct user and item ids batch by
batch; pass 2 encodes each batch into preallocated int32 user and item codes and the timestamps (16 bytes an
event); the stable ordering by (user, time) and the filters then work on those arrays. Peak memory is about
40 bytes an event (the arrays, the sort's permutation and one reordered copy at a time).

The result is the same :class:`~seqrec.data.interactions.Interactions` as :func:`read_interactions` on the same
rows (same vocabulary, order, filters and report): tests/test_stream.py checks it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from seqrec.data.interactions import Interactions, apply_filters
from seqrec.data.io import _numeric_time, _require_columns, _rows_message
from seqrec.data.vocab import Vocab
from seqrec.errors import DataError
from seqrec.ids import FIRST_ITEM

log = logging.getLogger(__name__)
BATCH_ROWS = 1 << 22  # rows per record batch read
ARRAYS = ("offsets", "items", "times")  # the memory-mapped files of a prepared log (.npy), with vocab_*.parquet


def _dataset(source):
    import pyarrow.dataset as ds

    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    try:
        return ds.dataset(path, format="parquet")
    except Exception as exc:  # pyarrow's errors carry the file that failed
        raise DataError(f"{path}: cannot read as Parquet: {exc}") from None


def _batches(dataset, columns: list[str]):
    """(file name, first row of the batch within its file, batch) over every file of the dataset, in order."""
    for fragment in sorted(dataset.get_fragments(), key=lambda f: f.path):
        row = 0
        for batch in fragment.to_batches(columns=columns, batch_size=BATCH_ROWS):
            yield fragment.path, row, batch
            row += batch.num_rows


def read_parquet_log(source, user: str = "user_id", item: str = "item_id", time: str = "timestamp", *,
                     min_user_events: int = 0, min_item_events: int = 0, core: str = "iterative",
                     drop_repeats: bool = False, out: str | Path | None = None) -> Interactions:
    """Read a Parquet file or directory of Parquet files into sequences without a DataFrame of the log (see the
    module docstring). With ``out``, the sequences are written there (``offsets.npy``, ``items.npy``,
    ``times.npy``, ``vocab_users.parquet``, ``vocab_items.parquet``) and returned memory-mapped."""
    dataset = _dataset(source)
    name = str(source)
    columns = {"user": user, "item": item, "time": time}
    _require_columns(dataset.schema.names, columns, name)
    n = dataset.count_rows()
    if n == 0:
        raise DataError(f"{name}: no interactions (the input has a header but no rows)")
    users, items = _distinct(dataset, columns)
    u = np.empty(n, dtype=np.int32)
    i = np.empty(n, dtype=np.int32)
    t = None
    at = 0
    user_index, item_index = pd.Index(users), pd.Index(items)
    for path, row, batch in _batches(dataset, list(columns.values())):
        m = batch.num_rows
        u[at:at + m] = user_index.get_indexer(batch.column(user).to_numpy(zero_copy_only=False))
        i[at:at + m] = item_index.get_indexer(batch.column(item).to_numpy(zero_copy_only=False))
        times = _numeric_time(batch.column(time).to_pandas(), path, time, row, label="row")
        if t is None:
            t = np.empty(n, dtype=np.float64 if times.dtype.kind == "f" else np.int64)
        elif times.dtype.kind == "f" and t.dtype.kind != "f":
            t = t.astype(np.float64)
        t[at:at + m] = times
        at += m
    arrays = [u, i, t]
    del u, i, t  # the list holds the only references: each is freed once its ordered copy replaces it
    return _order_and_filter(arrays, users, items, name, min_user_events, min_item_events, core, drop_repeats,
                             out)


def _distinct(dataset, columns: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Pass 1: the sorted distinct user and item ids; a null id is an error naming its file and rows."""
    import pyarrow.compute as pc

    seen = {"user": [], "item": []}
    for path, row, batch in _batches(dataset, [columns["user"], columns["item"]]):
        for key in ("user", "item"):
            column = batch.column(columns[key])
            if column.null_count:
                bad = np.asarray(column.is_null())
                raise DataError(_rows_message(path, columns[key], "null ids", bad, row, label="row"))
            seen[key].append(pc.unique(column).to_numpy(zero_copy_only=False))
    return tuple(np.unique(np.concatenate(seen[key])) for key in ("user", "item"))


def _order_and_filter(arrays: list, users, items, name, min_user_events, min_item_events, core, drop_repeats,
                      out) -> Interactions:
    """Stable order by user then time (ties keep input order), filters, compact re-encoding: what
    :func:`~seqrec.data.interactions.from_frame` does, one array at a time (``arrays`` = [user codes, item
    codes, times], replaced in place so that only one unordered array is alive beside the ordered ones)."""
    order = np.lexsort((arrays[2], arrays[0]))  # stable: by user, then time, then input position
    for k in range(3):
        arrays[k] = arrays[k][order]
    del order
    u, i, t = arrays
    arrays.clear()
    u, i, t, report = apply_filters(u, i, t, name, min_user_events, min_item_events, core, drop_repeats)
    user_counts = np.bincount(u, minlength=len(users))
    kept_items = np.bincount(i, minlength=len(items)) > 0
    new_item = np.cumsum(kept_items) - 1 + FIRST_ITEM  # old code -> internal id
    vocab = Vocab(users=users[user_counts > 0], items=items[kept_items])
    offsets = np.concatenate([[0], np.cumsum(user_counts[user_counts > 0])]).astype(np.int64)
    del u
    if out is None:
        return Interactions(vocab, offsets, new_item[i].astype(np.int64), t, name, report)
    return _write(Path(out), vocab, offsets, new_item, i, t, name, report)


def _write(out: Path, vocab: Vocab, offsets, new_item, i, t, name, report) -> Interactions:
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "offsets.npy", offsets)
    items = np.lib.format.open_memmap(out / "items.npy", mode="w+", dtype=np.int64, shape=(len(i),))
    step = 1 << 24
    for s in range(0, len(i), step):  # re-encoded a slice at a time: no second full-size array
        items[s:s + step] = new_item[i[s:s + step]]
    items.flush()
    del items
    np.save(out / "times.npy", t)
    vocab.save(out)
    return open_prepared(out, name, report)


def open_prepared(directory, name: str | None = None, report: list | None = None) -> Interactions:
    """The sequences :func:`read_parquet_log` wrote to ``directory``, memory-mapped (read-only)."""
    directory = Path(directory)
    arrays = {key: np.load(directory / f"{key}.npy", mmap_mode="r") for key in ARRAYS}
    return Interactions(Vocab.load(directory), np.asarray(arrays["offsets"]), arrays["items"], arrays["times"],
                        name or str(directory), report or [])
