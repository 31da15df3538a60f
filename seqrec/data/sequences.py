"""Vectorised views of CSR sequences: left-padded windows, flattened ranges, session-parallel steps, and
:class:`Histories`, a batch of histories to score."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqrec.errors import choose
from seqrec.ids import PAD

PERTURBATIONS = ("shuffle", "reverse", "last_item", "drop_last")


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for every (s, n), without a Python loop."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    before = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.repeat(starts - before, lengths) + np.arange(lengths.sum())


def windows(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """[R, length] int64: the last ``length`` items of ``items[starts[r]:ends[r]]``, left-padded with PAD."""
    starts = np.asarray(starts, dtype=np.int64)[:, None]
    ends = np.asarray(ends, dtype=np.int64)[:, None]
    index = ends - length + np.arange(length)[None, :]  # [R, length]
    valid = index >= starts
    if len(items) == 0:  # only empty histories
        return np.full(index.shape, PAD, dtype=np.int64)
    return np.where(valid, items[np.where(valid, index, 0)], PAD).astype(np.int64)


def session_parallel(offsets: np.ndarray, order: np.ndarray, batch_size: int):
    """Session-parallel mini-batches (GRU4Rec, Hidasi et al. 2016, Fig. 2) over sessions ``order``
    (indices into CSR ``offsets``; each must hold at least 2 events).

    Yields ``(positions, reset, keep)`` per step: ``positions`` [b] are the event indices of the slots'
    inputs (targets are ``positions + 1``); ``reset`` [b] marks slots whose session starts at this step,
    whose hidden state must be zeroed; ``keep`` (None, or a bool mask over the previous step's slots)
    says which slots are still in use once no session is left to fill them. A finished session is
    replaced in its slot by the next session in ``order``, so a slot's hidden state must be reset exactly
    there and nowhere else.
    """
    order = np.asarray(order, dtype=np.int64)
    slots = min(batch_size, len(order))
    nxt = slots
    pos = offsets[order[:slots]].astype(np.int64)
    end = offsets[order[:slots] + 1].astype(np.int64)
    reset, keep = np.ones(slots, dtype=bool), None
    while len(pos):
        yield pos, reset, keep
        pos = pos + 1
        done = pos + 1 >= end  # no target left after this event
        keep = None
        if done.any():
            finished = np.flatnonzero(done)
            refill = finished[:len(order) - nxt]
            new = order[nxt:nxt + len(refill)]
            nxt += len(refill)
            pos[refill], end[refill] = offsets[new], offsets[new + 1]
            if len(refill) < len(finished):  # no sessions left: these slots retire
                keep = np.ones(len(pos), dtype=bool)
                keep[finished[len(refill):]] = False
                pos, end, done = pos[keep], end[keep], done[keep]
        reset = done


@dataclass(frozen=True)
class Histories:
    """A batch of histories to score: rows ``items[starts[r]:ends[r]]`` (internal ids, oldest first), and the
    internal index of each row's user when it is a known user (``users``, or None for new histories)."""

    items: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    users: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.starts)

    @classmethod
    def from_lists(cls, histories: list[np.ndarray]) -> "Histories":
        lengths = np.array([len(h) for h in histories], dtype=np.int64)
        items = np.concatenate(histories).astype(np.int64) if len(histories) else np.zeros(0, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return cls(items, starts, starts + lengths)

    def windows(self, length: int) -> np.ndarray:
        """[R, length] left-padded last ``length`` items of each history."""
        return windows(self.items, self.starts, self.ends, length)

    def seen(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, item) pairs of every item in each full history."""
        lengths = self.ends - self.starts
        return np.repeat(np.arange(len(lengths)), lengths), self.items[ranges(self.starts, lengths)]

    def perturbed(self, how: str, rng: np.random.Generator, window: int | None = None) -> "Histories":
        """The same rows with each history changed (the users stay): ``shuffle`` (a random order) or
        ``reverse`` the last ``window`` items (all with None; older items keep their place, so a model that
        reads ``window`` items sees the same items in another order), keep the ``last_item`` only, or
        ``drop_last`` (a one-item history becomes empty)."""
        choose("perturbation", how, PERTURBATIONS)
        lengths = self.ends - self.starts
        if how == "last_item":
            return Histories(self.items, np.maximum(self.ends - 1, self.starts), self.ends, self.users)
        if how == "drop_last":
            return Histories(self.items, self.starts, np.maximum(self.ends - 1, self.starts), self.users)
        items = self.items[ranges(self.starts, lengths)]  # a compact copy: rows back to back
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        row = np.repeat(np.arange(len(lengths)), lengths)
        span = lengths if window is None else np.minimum(lengths, window)
        tail = starts + lengths - span  # first event of each row's reordered part
        moving = np.flatnonzero(np.arange(len(items)) >= tail[row])
        if how == "reverse":
            source = tail[row[moving]] + (starts + lengths)[row[moving]] - 1 - moving
        else:
            source = moving[np.lexsort((rng.random(len(moving)), row[moving]))]
        out = items.copy()
        out[moving] = items[source]
        return Histories(out, starts, starts + lengths, self.users)

    def subset(self, rows) -> "Histories":
        return Histories(self.items, self.starts[rows], self.ends[rows],
                         None if self.users is None else self.users[rows])
