import numpy as np
import pandas as pd
import pytest

import seqrec
from seqrec.data.interactions import read_interactions
from seqrec.errors import DataError
from seqrec.ids import FIRST_ITEM, PAD

from conftest import cyclic_frame, shared_dataset


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_csv_with_string_ids_and_datetimes(tmp_path):
    path = write(tmp_path, "log.csv", "uid,sku,ts\nb,x,2024-01-02\na,y,2024-01-01\na,x,2024-01-03T10:00:00\n")
    log = read_interactions(path, user="uid", item="sku", time="ts")
    assert list(log.vocab.users) == ["a", "b"] and list(log.vocab.items) == ["x", "y"]
    assert list(log.offsets) == [0, 2, 3]
    assert list(log.vocab.decode_items(log.items)) == ["y", "x", "x"]  # a's events by time, then b
    assert log.times[0] < log.times[1]


def test_reads_tsv_parquet_and_dataframe_identically(tmp_path):
    frame = cyclic_frame(n_users=5, length=4)
    frame.to_csv(tmp_path / "log.tsv", sep="\t", index=False)
    frame.to_parquet(tmp_path / "log.parquet", index=False)
    logs = [read_interactions(tmp_path / "log.tsv"), read_interactions(tmp_path / "log.parquet"),
            read_interactions(frame)]
    assert len({log.fingerprint() for log in logs}) == 1


def test_ties_keep_input_order(tmp_path):
    path = write(tmp_path, "ties.csv", "user_id,item_id,timestamp\n1,30,5\n1,10,5\n1,20,5\n1,40,1\n")
    log = read_interactions(path)
    assert list(log.vocab.decode_items(log.items)) == [40, 30, 10, 20]


@pytest.mark.parametrize("text, fragments", [
    ("user_id,item\n1,2\n", ["log.csv", "missing column", "'item_id'", "['user_id', 'item']"]),
    ("user_id,item_id,timestamp\n1,2,3\n,2,4\n1,,5\n", ["log.csv", "'user_id'", "null ids", "line 3"]),
    ("user_id,item_id,timestamp\n1,2,2024-01-01\n1,3,not-a-date\n1,4,yesterday\n",
     ["log.csv", "'timestamp'", "2 unparsable timestamps", "line 3 ('not-a-date')", "line 4 ('yesterday')"]),
    ("user_id,item_id,timestamp\n1,2,5\n1,3,\n", ["log.csv", "'timestamp'", "missing timestamps", "line 3"]),
    ("user_id,item_id,timestamp\n", ["log.csv", "no interactions"]),
    ("", ["log.csv", "empty file"]),
])
def test_bad_input_errors_name_file_column_and_rows(tmp_path, text, fragments):
    path = write(tmp_path, "log.csv", text)
    with pytest.raises(DataError) as error:
        read_interactions(path)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_null_item_error_names_item_column(tmp_path):
    path = write(tmp_path, "log.csv", "user_id,item_id,timestamp\n1,2,3\n1,,5\n")
    with pytest.raises(DataError, match=r"'item_id' has 1 null ids: line 3"):
        read_interactions(path)


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_interactions(tmp_path / "nope.csv")
    path = write(tmp_path, "log.json", "{}")
    with pytest.raises(DataError, match="unknown file type '.json'"):
        read_interactions(path)


def test_dataframe_errors_use_row_positions():
    frame = pd.DataFrame({"user_id": [1, None], "item_id": [1, 2], "timestamp": [1, 2]})
    with pytest.raises(DataError, match=r"<DataFrame>: column 'user_id' has 1 null ids: row 1"):
        read_interactions(frame)


def k_core_frame() -> pd.DataFrame:
    # user 3 has 2 events: removing it leaves item 'd' with 1 event, which the iterative core then removes,
    # which leaves user 2 with 2 events, so user 2 goes too. A single pass only removes user 3.
    rows = [(1, "a"), (1, "b"), (1, "c"), (2, "a"), (2, "b"), (2, "d"), (3, "c"), (3, "d"),
            (4, "a"), (4, "b"), (4, "c")]
    return pd.DataFrame({"user_id": [u for u, _ in rows], "item_id": [i for _, i in rows],
                         "timestamp": range(len(rows))})


def test_single_pass_and_iterative_core_differ_and_report_counts():
    single = read_interactions(k_core_frame(), min_user_events=3, min_item_events=2, core="single")
    iterative = read_interactions(k_core_frame(), min_user_events=3, min_item_events=2, core="iterative")
    assert single.n_events == 9 and single.report[0]["events_removed"] == 2
    assert single.report[0]["users_removed"] == 1 and single.report[0]["items_removed"] == 0
    assert iterative.n_events == 6 and iterative.n_users == 2 and iterative.n_items == 3
    assert iterative.report[0] == {"filter": "iterative_core(min_user_events=3, min_item_events=2)",
                                   "events_removed": 5, "users_removed": 2, "items_removed": 1}
    assert all(n >= 3 for n in iterative.lengths)


def test_drop_repeats_is_off_by_default_and_reported():
    frame = pd.DataFrame({"user_id": [1, 1, 1, 1, 2], "item_id": [5, 5, 6, 5, 5], "timestamp": [1, 2, 3, 4, 1]})
    assert read_interactions(frame).n_events == 5
    log = read_interactions(frame, drop_repeats=True)
    assert list(log.vocab.decode_items(log.items)) == [5, 6, 5, 5]
    assert log.report == [{"filter": "drop_repeats", "events_removed": 1, "users_removed": 0, "items_removed": 0}]


def test_filtering_everything_is_an_error():
    with pytest.raises(DataError, match="no interactions left"):
        read_interactions(k_core_frame(), min_user_events=50)


def test_vocab_encodes_by_value_and_round_trips(tmp_path):
    log = read_interactions(cyclic_frame(n_users=3, n_items=5, length=5))
    codes = log.vocab.encode_items(["3", 4, "nope", 99])
    assert list(log.vocab.decode_items(codes[:2])) == [3, 4]
    assert list(codes[2:]) == [PAD, PAD]
    log.vocab.save(tmp_path)
    again = seqrec.Vocab.load(tmp_path)
    assert np.array_equal(again.items, log.vocab.items) and np.array_equal(again.users, log.vocab.users)
    assert log.items.min() >= FIRST_ITEM


def test_shared_beauty_statistics_match_provenance():
    log = read_interactions(shared_dataset("amazon-beauty-bert4rec"))
    assert (log.n_users, log.n_items, log.n_events) == (40226, 54542, 353962)


@pytest.mark.parametrize("items,queries", [
    (np.array([5, 7, 9, 12]), [5, "7", "x", 12, 3, "12.0", "-5", np.int64(9), True, " 7", "1e1"]),
    (np.array(["a", "12", "b"], dtype=object), ["a", 12, "zz", "12", None]),
])
def test_small_id_lists_encode_as_pandas_does(items, queries, monkeypatch):
    from seqrec.data import vocab as module

    v = module.Vocab(users=np.array([1]), items=items)
    fast = [int(v.encode_items([q])[0]) for q in queries] + [v.encode_items(queries).tolist()]
    monkeypatch.setattr(module, "SMALL", -1)  # every list through pandas
    assert fast == [int(v.encode_items([q])[0]) for q in queries] + [v.encode_items(queries).tolist()]
