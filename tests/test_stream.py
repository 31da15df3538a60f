"""Parquet logs read in record batches (seqrec.data.stream): the same sequences as the DataFrame path, over
one file or a directory of files, written memory-mapped for training; errors name the file and row."""

import numpy as np
import pandas as pd
import pytest

import seqrec
from seqrec.data import stream
from seqrec.data.interactions import from_frame
from seqrec.data.io import validate
from seqrec.errors import DataError

from conftest import tiny_sasrec

COLUMNS = {"user": "user_id", "item": "item_id", "time": "timestamp"}


def log_frame(n=5000, seed=0, strings=False, datetimes=False):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"user_id": rng.integers(0, 300, n), "item_id": rng.zipf(1.5, n) % 200,
                          "timestamp": rng.integers(0, 50, n)})  # many ties: input order must decide
    if strings:
        frame["user_id"] = "u" + frame["user_id"].astype(str)
        frame["item_id"] = "i" + frame["item_id"].astype(str)
    if datetimes:
        frame["timestamp"] = pd.to_datetime(frame["timestamp"] * 3600, unit="s", utc=True)
    return frame


def expected(frame, **filters):
    named = frame.rename(columns={v: k for k, v in COLUMNS.items()})
    return from_frame(validate(named, COLUMNS, "x", 0), "x", **filters)


def same(a, b):
    assert np.array_equal(a.vocab.users, b.vocab.users) and np.array_equal(a.vocab.items, b.vocab.items)
    assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.items, b.items)
    assert np.array_equal(np.asarray(a.times, dtype=np.float64), np.asarray(b.times, dtype=np.float64))
    assert a.report == b.report


FILTERS = [{}, {"min_user_events": 5, "min_item_events": 5},
           {"min_user_events": 3, "min_item_events": 3, "drop_repeats": True},
           {"min_user_events": 5, "min_item_events": 2, "core": "single"}]


@pytest.mark.parametrize("filters", FILTERS, ids=["none", "5-core", "3-core-repeats", "single"])
@pytest.mark.parametrize("kind", ["ints", "strings", "datetimes"])
def test_batches_give_the_dataframe_paths_sequences(tmp_path, monkeypatch, filters, kind):
    monkeypatch.setattr(stream, "BATCH_ROWS", 700)  # several batches per file
    frame = log_frame(strings=kind == "strings", datetimes=kind == "datetimes")
    frame.to_parquet(tmp_path / "log.parquet", index=False, row_group_size=900)
    same(seqrec.read_interactions(tmp_path / "log.parquet", **filters), expected(frame, **filters))


def test_a_directory_of_files_is_one_log_in_file_order(tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "BATCH_ROWS", 500)
    frame = log_frame(n=6000)
    folder = tmp_path / "log"
    folder.mkdir()
    for k, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[part].to_parquet(folder / f"part-{k}.parquet", index=False)
    same(seqrec.read_interactions(folder, min_user_events=2), expected(frame, min_user_events=2))


def test_prepared_arrays_are_memory_mapped_and_train_a_model(tmp_path):
    frame = log_frame(n=4000)
    frame.to_parquet(tmp_path / "log.parquet", index=False)
    log = stream.read_parquet_log(tmp_path / "log.parquet", min_user_events=3, out=tmp_path / "prepared")
    assert isinstance(log.items, np.memmap) and isinstance(log.times, np.memmap)
    same(log, expected(frame, min_user_events=3))
    reopened = stream.open_prepared(tmp_path / "prepared")
    assert np.array_equal(reopened.items, log.items) and reopened.items.dtype == np.int64
    split = seqrec.leave_one_out(reopened)
    model = tiny_sasrec(epochs=1).fit(split.train, valid=split.valid)
    assert np.isfinite(model.train_result_.epochs[0].loss)


def test_errors_name_the_file_and_the_row(tmp_path):
    folder = tmp_path / "log"
    folder.mkdir()
    good = log_frame(n=100)
    good.to_parquet(folder / "a.parquet", index=False)
    bad = log_frame(n=100, seed=1).astype({"item_id": "float64"})
    bad.loc[[7, 42], "item_id"] = np.nan
    bad.astype({"item_id": "Int64"}).to_parquet(folder / "b.parquet", index=False)
    with pytest.raises(DataError, match=r"b\.parquet: column 'item_id' has 2 null ids: row 7, row 42"):
        seqrec.read_interactions(folder)
    times = log_frame(n=50)
    times["timestamp"] = "2020-01-01 00:00:" + times["timestamp"].astype(str).str.zfill(2)
    times.loc[3, "timestamp"] = "yesterday"
    times.to_parquet(tmp_path / "t.parquet", index=False)
    with pytest.raises(DataError, match=r"t\.parquet: column 'timestamp' has 1 unparsable timestamps: row 3"):
        seqrec.read_interactions(tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"missing column\(s\) \['when'\]"):
        seqrec.read_interactions(tmp_path / "t.parquet", time="when")
    with pytest.raises(DataError, match="no such file or directory"):
        stream.read_parquet_log(tmp_path / "nothing")
