import numpy as np
import pandas as pd
import pytest

import seqrec
from seqrec.errors import DataError
from seqrec.ids import PAD


def small_log():
    rows = {"user_id": [1, 1, 1, 1, 2, 2, 2, 3, 3], "item_id": [10, 11, 12, 13, 20, 21, 22, 30, 31],
            "timestamp": [1, 2, 3, 9, 4, 5, 8, 6, 7]}
    return seqrec.read_interactions(pd.DataFrame(rows))


def test_leave_one_out_targets_histories_and_short_users():
    log = small_log()
    split = seqrec.leave_one_out(log)
    train, valid, test = split
    decode = log.vocab.decode_items
    assert list(decode(test.targets)) == [13, 22] and list(decode(valid.targets)) == [12, 21]
    assert list(decode(train.items)) == [10, 11, 20, 30, 31]  # user 3 (2 events) trains only
    assert split.params["users_train_only"] == 1
    assert list(decode(test.windows(3)[0])) == [10, 11, 12]  # the test history includes the valid item
    rows, items = test.batch().seen()
    assert list(rows) == [0, 0, 0, 1, 1] and list(decode(items)) == [10, 11, 12, 20, 21]
    # refitting adds every validation event back, never a test target
    assert list(decode(split.train_valid.items)) == [10, 11, 12, 20, 21, 30, 31]


def test_train_valid_adds_the_validation_event_of_every_user_even_outside_a_sampled_subset():
    log = seqrec.read_interactions(pd.DataFrame({"user_id": np.repeat(np.arange(50), 4),
                                                 "item_id": np.arange(200) % 7, "timestamp": np.arange(200)}))
    split = seqrec.leave_one_out(log, valid_users=10, seed=1)
    assert split.train.n_events == 100 and split.train_valid.n_events == 150
    assert np.array_equal(split.train_valid.lengths, split.test.cuts)  # each user's events before the test one


def test_leave_one_out_valid_subset_is_seeded():
    log = seqrec.read_interactions(pd.DataFrame({"user_id": np.repeat(np.arange(50), 4),
                                                 "item_id": np.arange(200) % 7, "timestamp": np.arange(200)}))
    a = seqrec.leave_one_out(log, valid_users=10, seed=1).valid.users
    b = seqrec.leave_one_out(log, valid_users=10, seed=1).valid.users
    assert len(a) == 10 and np.array_equal(a, b)
    assert len(seqrec.leave_one_out(log).test) == 50


def test_temporal_split_uses_only_events_before_the_boundary():
    log = small_log()
    split = seqrec.temporal_split(log, quantile=0.75)  # boundary = 7
    decode = log.vocab.decode_items
    assert split.params["boundary"] == 7.0
    test = split.test
    # user 1 (events at 1,2,3 | 9) and user 2 (4,5 | 8); user 3 (6 | 7) too: first event at/after 7.
    assert list(log.vocab.users[test.users]) == [1, 2, 3]
    assert list(decode(test.targets)) == [13, 22, 31]
    window = test.windows(4)[0]
    assert window[0] == PAD and list(decode(window[1:])) == [10, 11, 12]
    train = split.train
    assert np.all(train.times < 7)
    assert list(decode(split.valid.targets)) == [12]  # only user 1 has 3 training events
    assert np.all(split.train_valid.times < 7) and split.train_valid.n_events == split.train.n_events + 1
    assert split.params["events_after_boundary_not_predicted"] == 0


def test_temporal_split_rejects_bad_quantile():
    with pytest.raises(DataError, match="quantile"):
        seqrec.temporal_split(small_log(), quantile=1.5)


def _sessions_frame():
    # sessions 0..9 in time order; item 99 appears only in the last session; session 8 has length 1
    rows = []
    for s in range(10):
        items = [1, 2, 3] if s < 8 else ([4] if s == 8 else [1, 99, 2, 3])
        rows += [(s, item, 1_000 * s + t) for t, item in enumerate(items)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def test_session_split_predicts_every_next_event_of_the_last_sessions():
    log = seqrec.read_interactions(_sessions_frame())
    split = seqrec.session_split(log, test_fraction=0.2, valid_fraction=0.125)
    test_sessions = set(log.vocab.users[np.unique(split.test.users)])
    assert test_sessions == {9}  # session 8 (one event) cannot be evaluated
    # item 99 is unknown to training: removed from the test session, which becomes [1, 2, 3]
    assert split.test.targets.tolist() == [log.vocab.encode_items([2])[0], log.vocab.encode_items([3])[0]]
    assert split.test.cuts.tolist() == [1, 2]
    card = split.card()
    # removed: item 99, and item 4 (session 8, also unknown to training), which leaves session 8 empty
    assert card["eval_events_removed_unknown_item"] == 2 and card["eval_sessions_dropped_short"] == 1
    assert card["kind"] == "session" and card["n_test"] == 2
    assert set(log.vocab.users[np.unique(split.valid.users)]) == {7}
    assert split.train_lengths.tolist() == [3] * 7 + [0, 0, 0]  # valid and test sessions never train
    assert split.train_valid_lengths.tolist() == [3] * 8 + [0, 0]  # a refit adds the validation session


def test_session_split_by_days():
    frame = _sessions_frame()
    frame["timestamp"] = frame["timestamp"] * 86.4  # session s starts on day s
    split = seqrec.session_split(seqrec.read_interactions(frame), days=2.5, valid_fraction=0.2)
    # sessions starting after day 9 - 2.5: 7, 8 (too short) and 9
    assert split.card()["test_sessions"] == 2 and split.card()["days"] == 2.5
    assert set(np.unique(split.test.users)) == {7, 9}


def test_session_split_refuses_impossible_settings():
    log = seqrec.read_interactions(_sessions_frame())
    with pytest.raises(DataError, match="test_fraction"):
        seqrec.session_split(log, test_fraction=1.5)
    with pytest.raises(DataError, match="days"):
        seqrec.session_split(log, days=0)
