"""Evaluation splits. Every split is a set of *cut points* into time-ordered sequences.

An :class:`EvalSet` row is (user, cut): its history is the user's first ``cut`` events and its target
is event number ``cut``. Leave-one-out and the global temporal split both produce such rows, so one
training and one evaluation code path serve both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqrec.data.interactions import Interactions
from seqrec.data.sequences import ranges, windows
from seqrec.errors import DataError


@dataclass(frozen=True)
class EvalSet:
    log: Interactions
    users: np.ndarray  # [E] internal user indices
    cuts: np.ndarray  # [E] history lengths; target = the event right after the history
    name: str = "test"

    def __len__(self) -> int:
        return len(self.users)

    @property
    def targets(self) -> np.ndarray:
        return self.log.items[self.log.offsets[self.users] + self.cuts]

    def histories(self, max_len: int, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """[R, max_len] left-padded last ``max_len`` items of each history."""
        starts = self.log.offsets[self.users[rows]]
        return windows(self.log.items, starts, starts + self.cuts[rows], max_len)

    def seen(self, rows: slice | np.ndarray = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """(row, item) pairs of every item in each full history (not only the last max_len)."""
        starts, cuts = self.log.offsets[self.users[rows]], self.cuts[rows]
        return np.repeat(np.arange(len(cuts)), cuts), self.log.items[ranges(starts, cuts)]

    def subset(self, rows: np.ndarray) -> "EvalSet":
        return EvalSet(self.log, self.users[rows], self.cuts[rows], self.name)


@dataclass(frozen=True)
class Split:
    log: Interactions
    train_lengths: np.ndarray  # [U] events of each user used for training (a prefix)
    valid: EvalSet
    test: EvalSet
    kind: str
    params: dict

    @property
    def train(self) -> Interactions:
        return self.log.prefix(self.train_lengths)

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
    return Split(log, train_lengths, valid, test, "leave_one_out", params)


def temporal_split(log: Interactions, quantile: float = 0.9, valid_users: int | None = None,
                   seed: int = 0) -> Split:
    """Global temporal split at a timestamp quantile ("Does It Look Sequential?", RecSys 2024).

    Training uses only events before the boundary. Test rows: users with events on both sides; their
    first event at or after the boundary is predicted from everything before it. Validation: the last
    training event of users with at least 3 training events (leave-last-out inside the training part).
    """
    if not 0.0 < quantile < 1.0:
        raise DataError(f"temporal split quantile must be in (0, 1), got {quantile}")
    boundary = float(np.quantile(log.times, quantile))
    before = log.times < boundary  # a prefix of every user, since events are time-ordered
    user_of_event = np.repeat(np.arange(log.n_users), log.lengths)
    n_before = np.bincount(user_of_event[before], minlength=log.n_users)
    n = log.lengths
    test_users = np.flatnonzero((n_before >= 1) & (n > n_before))
    if len(test_users) == 0:
        raise DataError(f"{log.source}: no user has events on both sides of the boundary {boundary}")
    valid_users_all = np.flatnonzero(n_before >= 3)
    train_lengths = np.where(n_before >= 3, n_before - 1, n_before)
    valid = _sample(EvalSet(log, valid_users_all, n_before[valid_users_all] - 1, "valid"), valid_users, seed)
    test = EvalSet(log, test_users, n_before[test_users], "test")
    params = {"quantile": quantile, "boundary": boundary, "valid_users": valid_users, "seed": seed,
              "events_after_boundary_unused": int((n - n_before).sum() - len(test_users)),
              "users_after_boundary_without_history": int(((n_before == 0) & (n > 0)).sum())}
    return Split(log, train_lengths, valid, test, "temporal", params)


def _sample(evalset: EvalSet, size: int | None, seed: int) -> EvalSet:
    if size is None or size >= len(evalset):
        return evalset
    rows = np.sort(np.random.default_rng(seed).choice(len(evalset), size=size, replace=False))
    return evalset.subset(rows)
