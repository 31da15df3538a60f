"""Validated, id-encoded, time-ordered user sequences (CSR layout), and the filters that make them.

Ordering: events are sorted by user, then by timestamp with a *stable* sort, so events with equal
timestamps keep their input order. Published datasets have such ties (MovieLens-100K has ~50k
same-second events) and position-only files rely on input order.

Filters (all vectorised, each reported as counts of removed events, users and items):
- ``drop_repeats``: drop an event when the same user's previous event has the same item;
- ``min_user_events`` / ``min_item_events`` with ``core="iterative"`` (k-core: repeat until every
  remaining user and item meets its minimum) or ``core="single"`` (one pass over the original counts,
  as the SASRec preprocessing script ``DataProcessing.py`` does). With ``drop_repeats`` too, the iterative
  core also drops the consecutive repeats its removals create (a-b-a with b removed), until both hold
  (the preprocessing of "Does It Look Sequential?", RecSys 2024).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from seqrec.data.io import _PARQUET_SUFFIXES, load_frame, validate
from seqrec.data.vocab import Vocab
from seqrec.errors import DataError, choose
from seqrec.ids import FIRST_ITEM

log = logging.getLogger(__name__)
CORES = ("iterative", "single")


@dataclass(frozen=True)
class Interactions:
    """User sequences in CSR form: user ``u`` has items ``items[offsets[u]:offsets[u+1]]`` (oldest first)."""

    vocab: Vocab
    offsets: np.ndarray  # [U+1] int64
    items: np.ndarray  # [E] int64 internal item ids (>= FIRST_ITEM)
    times: np.ndarray  # [E] timestamps, aligned with items
    source: str = "<memory>"
    report: list = field(default_factory=list)

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_items(self) -> int:
        return self.vocab.n_items

    @property
    def n_events(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def event_users(self) -> np.ndarray:
        """[E] the user index of every event."""
        return np.repeat(np.arange(self.n_users), self.lengths)

    def positions(self) -> np.ndarray:
        """[E] the 0-based position of every event within its user's sequence."""
        return _positions(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user]:self.offsets[user + 1]]

    def prefix(self, lengths: np.ndarray) -> "Interactions":
        """The first ``lengths[u]`` events of every user (users keep their indices, possibly empty)."""
        lengths = np.minimum(np.asarray(lengths, dtype=np.int64), self.lengths)
        keep = self.positions() < np.repeat(lengths, self.lengths)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        return Interactions(self.vocab, offsets, self.items[keep], self.times[keep], self.source, self.report)

    def fingerprint(self) -> str:
        """sha256 over the encoded sequences and the vocabulary: equal data gives equal fingerprints."""
        digest = hashlib.sha256()
        for array in (self.offsets, self.items, np.asarray(self.times, dtype=np.float64)):
            digest.update(np.ascontiguousarray(array).tobytes())
        for ids in (self.vocab.users, self.vocab.items):
            digest.update(pd.util.hash_array(np.asarray(ids, dtype=object)).tobytes())
        return digest.hexdigest()[:16]

    def summary(self) -> dict:
        return {"source": self.source, "fingerprint": self.fingerprint(), "n_users": self.n_users,
                "n_items": self.n_items, "n_events": self.n_events}


def read_interactions(source, user: str = "user_id", item: str = "item_id", time: str = "timestamp", *,
                      sep: str | None = None, min_user_events: int = 0, min_item_events: int = 0,
                      core: str = "iterative", drop_repeats: bool = False) -> Interactions:
    """Read a CSV/TSV/Parquet path, a directory of Parquet files or a DataFrame into validated, encoded,
    time-ordered sequences. Parquet is read in record batches without a DataFrame of the log
    (:mod:`seqrec.data.stream`), so logs of hundreds of millions of events fit in memory."""
    choose("core", core, CORES)
    if _is_parquet(source):
        from seqrec.data.stream import read_parquet_log

        return read_parquet_log(source, user, item, time, min_user_events=min_user_events,
                                min_item_events=min_item_events, core=core, drop_repeats=drop_repeats)
    columns = {"user": user, "item": item, "time": time}
    frame, name, offset = load_frame(source, columns, sep)
    frame = validate(frame, columns, name, offset)
    return from_frame(frame, name, min_user_events=min_user_events, min_item_events=min_item_events,
                      core=core, drop_repeats=drop_repeats)


def _is_parquet(source) -> bool:
    if isinstance(source, pd.DataFrame):
        return False
    path = Path(source)
    return path.is_dir() or (path.is_file() and path.suffix.lower() in _PARQUET_SUFFIXES)


def from_frame(frame: pd.DataFrame, name: str, *, min_user_events=0, min_item_events=0,
               core="iterative", drop_repeats=False) -> Interactions:
    """Encode, order and filter a validated frame with columns ``user``, ``item``, ``time``."""
    user_codes, users = pd.factorize(frame["user"], sort=True)
    item_codes, items = pd.factorize(frame["item"], sort=True)
    times = np.asarray(frame["time"])
    order = np.argsort(times, kind="stable")
    order = order[np.argsort(user_codes[order], kind="stable")]  # by user, then time; ties keep input order
    u, i, t, report = apply_filters(user_codes[order], item_codes[order], times[order], name, min_user_events,
                                    min_item_events, core, drop_repeats)
    u_kept, u_new = np.unique(u, return_inverse=True)
    i_kept, i_new = np.unique(i, return_inverse=True)
    vocab = Vocab(users=np.asarray(users)[u_kept], items=np.asarray(items)[i_kept])
    offsets = np.concatenate([[0], np.cumsum(np.bincount(u_new, minlength=len(u_kept)))]).astype(np.int64)
    return Interactions(vocab, offsets, (i_new + FIRST_ITEM).astype(np.int64), t, name, report)


def apply_filters(u, i, t, name: str, min_user_events: int, min_item_events: int, core: str, drop_repeats: bool):
    """The filters of the module docstring on events ordered by user and time (codes ``u``, ``i``, times ``t``):
    the kept ``u, i, t`` and the report, each filter logged; nothing left is a DataError."""
    report = []
    if drop_repeats:
        keep = np.ones(len(u), dtype=bool)
        keep[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
        report.append(_removed("drop_repeats", u, i, keep))
        u, i, t = u[keep], i[keep], t[keep]
    if min_user_events > 1 or min_item_events > 1:
        keep = _core_mask(u, i, min_user_events, min_item_events, core, drop_repeats)
        repeats = " + the repeats it creates" if drop_repeats and core == "iterative" else ""
        report.append(_removed(f"{core}_core(min_user_events={min_user_events}, min_item_events={min_item_events})"
                               f"{repeats}", u, i, keep))
        u, i, t = u[keep], i[keep], t[keep]
    if len(u) == 0:
        raise DataError(f"{name}: no interactions left after filtering: {report}")
    for entry in report:
        log.info("%s: filter %s removed %d events, %d users, %d items", name, entry["filter"],
                 entry["events_removed"], entry["users_removed"], entry["items_removed"])
    return u, i, t, report


def _core_mask(u, i, min_user, min_item, core, drop_repeats=False) -> np.ndarray:
    keep = np.ones(len(u), dtype=bool)
    while True:
        user_counts = np.bincount(u[keep], minlength=u.max() + 1)
        item_counts = np.bincount(i[keep], minlength=i.max() + 1)
        new_keep = keep & (user_counts[u] >= min_user) & (item_counts[i] >= min_item)
        if core == "single":
            return new_keep
        if drop_repeats:  # an event repeating the previous *kept* event of its user
            kept = np.flatnonzero(new_keep)
            new_keep[kept[1:][(u[kept[1:]] == u[kept[:-1]]) & (i[kept[1:]] == i[kept[:-1]])]] = False
        if new_keep.sum() == keep.sum():
            return new_keep
        keep = new_keep


def _removed(name, u, i, keep) -> dict:
    return {"filter": name, "events_removed": int((~keep).sum()),
            "users_removed": int(len(np.unique(u)) - len(np.unique(u[keep]))),
            "items_removed": int(len(np.unique(i)) - len(np.unique(i[keep])))}


def _positions(offsets: np.ndarray) -> np.ndarray:
    """Position of every event within its user's sequence (0-based), vectorised."""
    lengths = np.diff(offsets)
    return np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
