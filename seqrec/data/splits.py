"""Evaluation splits. Every split is a set of *cut points* into time-ordered sequences.

An :class:`EvalSet` row is (user, cut): its history is the user's first ``cut`` events and its target
is event number ``cut``. Leave-one-out and the global temporal split both produce such rows, so one
training and one evaluation code path serve both.

Each evaluation set carries its ranking protocol, so validation during ``fit`` and the test rank alike
without the caller repeating it: ``exclude_seen`` (leave-one-out and temporal: the history's items are
filtered out of the ranking; session: they stay, as the GRU4Rec papers) and ``candidates`` (session: only
items with a training event can be ranked, as the GRU4Rec reference scores only training items; the
others: every item).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqrec.data.interactions import Interactions
from seqrec.data.sequences import Histories
from seqrec.errors import DataError, choose
from seqrec.ids import FIRST_ITEM


@dataclass(frozen=True)
class EvalSet:
    log: Interactions
    users: np.ndarray  # [E] internal user indices
    cuts: np.ndarray  # [E] history lengths; target = the event right after the history
    name: str = "test"
    exclude_seen: bool = True  # the protocol: rank without the history's items
    candidates: np.ndarray | None = None  # internal ids that may be ranked (None: every item)

    def __len__(self) -> int:
        return len(self.users)

    @property
    def targets(self) -> np.ndarray:
        return self.log.items[self.log.offsets[self.users] + self.cuts]

    def batch(self, rows: slice | np.ndarray = slice(None)) -> Histories:
        """The histories of ``rows`` (each user's first ``cut`` events), with their users."""
        starts = self.log.offsets[self.users[rows]]
        return Histories(self.log.items, starts, starts + self.cuts[rows], self.users[rows])

    def windows(self, max_len: int, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """[R, max_len] left-padded last ``max_len`` items of each history."""
        return self.batch(rows).windows(max_len)

    def subset(self, rows: np.ndarray) -> "EvalSet":
        return EvalSet(self.log, self.users[rows], self.cuts[rows], self.name, self.exclude_seen, self.candidates)

    def protocol(self) -> dict:
        """The ranking protocol this set carries, for the protocol card."""
        n_items = self.log.n_items
        if self.candidates is None:
            candidates = f"all {n_items} items"
        else:
            candidates = (f"the {len(self.candidates)} items with a training event "
                          f"({n_items - len(self.candidates)} items without one are never ranked)")
        return {"seen_filtering": self.exclude_seen, "candidates": candidates}


@dataclass(frozen=True)
class Split:
    log: Interactions
    train_lengths: np.ndarray  # [U] events of each user used for training (a prefix)
    valid: EvalSet
    test: EvalSet
    kind: str
    params: dict
    train_valid_lengths: np.ndarray  # [U] training events plus every validation event

    @property
    def train(self) -> Interactions:
        return self.log.prefix(self.train_lengths)

    @property
    def train_valid(self) -> Interactions:
        """Training data with the validation events added back, for refitting a model whose epochs were
        chosen on the validation set (:meth:`SequentialRecommender.refit`): leave-one-out, every user's
        events but the last (also for users outside a sampled validation subset); temporal, every event
        before the boundary; session, the training and validation sessions. Never a test target."""
        return self.log.prefix(self.train_valid_lengths)

    def __iter__(self):
        return iter((self.train, self.valid, self.test))

    def card(self) -> dict:
        return {"kind": self.kind, **self.params, "n_train_events": int(self.train_lengths.sum()),
                "n_valid": len(self.valid), "n_test": len(self.test)}


def leave_one_out(log: Interactions, valid_users: int | None = None, seed: int = 0) -> Split:
    """Last event -> test target, second-to-last -> validation target, the rest -> training.

    Users with fewer than 3 events go entirely to training (as the SASRec reference code does).
    ``valid_users`` keeps a random (seeded) subset of validation users, as published protocols do.
    """
    n = log.lengths
    eligible = np.flatnonzero(n >= 3)
    if len(eligible) == 0:
        raise DataError(f"{log.source}: leave-one-out needs users with at least 3 events; none has")
    train_lengths = np.where(n >= 3, n - 2, n)
    valid = _sample(EvalSet(log, eligible, n[eligible] - 2, "valid"), valid_users, seed)
    test = EvalSet(log, eligible, n[eligible] - 1, "test")
    params = {"valid_users": valid_users, "seed": seed,
              "users_train_only": int((n < 3).sum())}
    return Split(log, train_lengths, valid, test, "leave_one_out", params, np.where(n >= 3, n - 1, n))


def temporal_split(log: Interactions, quantile: float = 0.9, valid_users: int | None = None,
                   seed: int = 0, target: str = "first") -> Split:
    """Global temporal split at a timestamp quantile ("Does It Look Sequential?", RecSys 2024).

    Training uses only events before the boundary. Test rows, ``target="first"`` (default): users with
    events on both sides; their first event at or after the boundary is predicted from everything before it.
    ``target="last"`` (the code of "Does It Look Sequential?"): every user with at least 2 events whose last
    event is at or after the boundary; that last event is predicted from all the user's earlier events,
    those after the boundary included (a user may have none before it: a user the model never trained on).
    Validation: the last training event of users with at least 3 training events (leave-last-out inside
    the training part).
    """
    if not 0.0 < quantile < 1.0:
        raise DataError(f"temporal split quantile must be in (0, 1), got {quantile}")
    choose("temporal split target", target, ("first", "last"))
    boundary = float(np.quantile(log.times, quantile))
    before = log.times < boundary  # a prefix of every user, since events are time-ordered
    n_before = np.bincount(log.event_users()[before], minlength=log.n_users)
    n = log.lengths
    if target == "first":
        test_users = np.flatnonzero((n_before >= 1) & (n > n_before))
        test_cuts = n_before[test_users]
    else:
        test_users = np.flatnonzero((n >= 2) & (n > n_before))
        test_cuts = n[test_users] - 1
    if len(test_users) == 0:
        raise DataError(f"{log.source}: no test user for the boundary {boundary} (target={target!r})")
    valid_users_all = np.flatnonzero(n_before >= 3)
    train_lengths = np.where(n_before >= 3, n_before - 1, n_before)
    valid = _sample(EvalSet(log, valid_users_all, n_before[valid_users_all] - 1, "valid"), valid_users, seed)
    test = EvalSet(log, test_users, test_cuts, "test")
    params = {"quantile": quantile, "boundary": boundary, "target": target, "valid_users": valid_users,
              "seed": seed, "events_after_boundary_not_predicted": int((n - n_before).sum() - len(test_users)),
              "users_after_boundary_without_history": int(((n_before == 0) & (n > 0)).sum())}
    return Split(log, train_lengths, valid, test, "temporal", params, n_before)


def session_split(log: Interactions, test_fraction: float = 0.1, days: float | None = None,
                  valid_fraction: float | None = None) -> Split:
    """Session-based protocol (GRU4Rec, Hidasi et al. 2016): each "user" of ``log`` is a session.

    Sessions are ordered by their first timestamp (ties, e.g. position-only timestamps, by session order
    in the vocabulary). Test: the sessions starting in the last ``days`` days (timestamps in seconds, or
    datetimes), or else the last ``test_fraction`` of sessions. Validation: the same share of the
    remaining sessions, taken from their end; training: the sessions before. As in the GRU4Rec
    preprocessing, events of validation/test sessions whose item never occurs in training are removed,
    then sessions left shorter than 2 are dropped; both counts are in the split card.
    Evaluation rows predict **every** next event of a session from its prefix (cuts 1 .. length - 1),
    ranked with the session's items kept and only training items as candidates (the sets carry it).
    """
    n = log.lengths
    sessions = np.flatnonzero(n > 0)
    start_times = np.asarray(log.times)[log.offsets[sessions]]
    if np.issubdtype(start_times.dtype, np.datetime64):
        start_times = start_times.astype("datetime64[ns]").astype(np.int64) / 1e9
    order = sessions[np.lexsort((sessions, start_times))]
    if days is not None:
        if days <= 0:
            raise DataError(f"session split: days must be positive, got {days}")
        ordered_times = np.sort(start_times)
        n_test = int((ordered_times > ordered_times[-1] - days * 86400.0).sum())
    else:
        if not 0.0 < test_fraction < 1.0:
            raise DataError(f"session split: test_fraction must be in (0, 1), got {test_fraction}")
        n_test = int(round(len(order) * test_fraction))
    valid_fraction = test_fraction if valid_fraction is None else valid_fraction
    n_valid = int(round((len(order) - n_test) * valid_fraction))
    if n_test < 1 or len(order) - n_test - n_valid < 1:
        raise DataError(f"{log.source}: session split leaves {n_test} test and "
                        f"{len(order) - n_test - n_valid} training sessions; both must be positive")
    n_train = len(order) - n_test - n_valid
    test_sessions, valid_sessions = order[n_train + n_valid:], order[n_train:n_train + n_valid]
    role = np.zeros(log.n_users, dtype=np.int8)  # 0 train, 1 valid, 2 test
    role[valid_sessions], role[test_sessions] = 1, 2
    event_role = np.repeat(role, n)
    known = np.zeros(log.n_items + FIRST_ITEM, dtype=bool)
    known[log.items[event_role == 0]] = True
    keep = (event_role == 0) | known[log.items]
    lengths = np.bincount(log.event_users()[keep], minlength=log.n_users)
    filtered = Interactions(log.vocab, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                            log.items[keep], np.asarray(log.times)[keep], log.source, log.report)

    trained = np.flatnonzero(known[FIRST_ITEM:]) + FIRST_ITEM
    candidates = None if len(trained) == log.n_items else trained

    def every_next_event(chosen: np.ndarray, name: str) -> EvalSet:
        chosen = np.sort(chosen[lengths[chosen] >= 2])
        counts = lengths[chosen] - 1
        cuts = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + 1
        return EvalSet(filtered, np.repeat(chosen, counts), cuts, name, exclude_seen=False, candidates=candidates)

    valid, test = every_next_event(valid_sessions, "valid"), every_next_event(test_sessions, "test")
    if len(test) == 0:
        raise DataError(f"{log.source}: no test session keeps 2 events with items known from training")
    train_lengths = np.where(role == 0, lengths, 0)
    params = {"test_fraction": None if days is not None else test_fraction, "days": days,
              "valid_fraction": valid_fraction, "train_sessions": int((role[sessions] == 0).sum()),
              "valid_sessions": int(len(np.unique(valid.users))), "test_sessions": int(len(np.unique(test.users))),
              "eval_events_removed_unknown_item": int((~keep).sum()),
              "eval_sessions_dropped_short": int(((role > 0) & (n > 0) & (lengths < 2)).sum()),
              "predicts": "every next event of each session from its prefix"}
    return Split(filtered, train_lengths, valid, test, "session", params, np.where(role <= 1, lengths, 0))


def _sample(evalset: EvalSet, size: int | None, seed: int) -> EvalSet:
    if size is None or size >= len(evalset):
        return evalset
    rows = np.sort(np.random.default_rng(seed).choice(len(evalset), size=size, replace=False))
    return evalset.subset(rows)
