"""What a log looks like: sizes, sequence lengths, repeats, time, ties (vectorised, no loop per event).

:func:`shuffle_within_users` is the perturbation the audit measures against: every user keeps their items,
in a random order.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from seqrec.data.interactions import Interactions
from seqrec.ids import FIRST_ITEM

LENGTH_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


def timestamps_are_positions(log: Interactions) -> bool:
    """True when every timestamp is the event's position in its user's sequence (1-based, or 0-based): a
    file that kept only the order (as the published SASRec / BERT4Rec / S3-Rec files). Such timestamps say
    nothing about global time: a temporal split and leakage across users are then undefined."""
    times = np.asarray(log.times, dtype=np.float64)
    pos = log.positions()
    return bool(log.n_events) and (bool(np.all(times == pos + 1)) or bool(np.all(times == pos)))


def time_unit(times: np.ndarray) -> str | None:
    """'s' or 'ms' when timestamps look like unix time in that unit (years 1973-2096), else None."""
    lo, hi = float(np.min(times)), float(np.max(times))
    for unit, scale in (("s", 1.0), ("ms", 1e3)):
        if 1e8 * scale <= lo and hi <= 4e9 * scale:
            return unit
    return None


def dataset_statistics(log: Interactions, positions_only: bool | None = None) -> dict:
    """Sizes, sequence-length distribution, repeats, time span and timestamp ties of ``log``.

    Repeats: ``consecutive`` events repeat the user's previous item; ``total`` events repeat an item seen
    earlier in the user's sequence (consecutive ones included). Ties: events with the same timestamp as the
    user's previous event (their order is the input order). ``positions_only`` says whether the timestamps
    are positions (None: :func:`timestamps_are_positions` of ``log``; a filtered log's positions have gaps,
    so pass what the raw log showed).
    """
    lengths = log.lengths
    users = log.event_users()
    same_user = users[1:] == users[:-1]
    consecutive = int((same_user & (log.items[1:] == log.items[:-1])).sum())
    pairs = users.astype(np.int64) * (log.n_items + FIRST_ITEM) + log.items
    total = int(log.n_events - len(np.unique(pairs)))
    times = np.asarray(log.times, dtype=np.float64)
    ties = int((same_user & (times[1:] == times[:-1])).sum())
    item_counts = np.bincount(log.items - FIRST_ITEM, minlength=log.n_items)
    positional = timestamps_are_positions(log) if positions_only is None else positions_only
    unit = None if positional else time_unit(times)
    time = {"min": float(times.min()), "max": float(times.max()), "positions_only": positional, "unit": unit}
    if unit:
        scale = 1.0 if unit == "s" else 1e3
        time["first"] = str(np.datetime64(int(times.min() / scale), "s"))
        time["last"] = str(np.datetime64(int(times.max() / scale), "s"))
        time["span_days"] = float((times.max() - times.min()) / scale / 86400.0)
    top = np.sort(item_counts)[::-1]
    return {
        "users": int(log.n_users), "items": int(log.n_items), "events": int(log.n_events),
        "density": float(log.n_events / max(log.n_users * log.n_items, 1)),
        "sequence_length": {"min": int(lengths.min()), "mean": float(lengths.mean()), "max": int(lengths.max()),
                            **{f"p{round(q * 100)}": float(np.quantile(lengths, q)) for q in LENGTH_QUANTILES}},
        "item_events": {"min": int(item_counts.min()), "median": float(np.median(item_counts)),
                        "max": int(item_counts.max()),
                        "top_1pct_share": float(top[:max(1, len(top) // 100)].sum() / max(log.n_events, 1))},
        "repeats": {"consecutive": consecutive, "consecutive_share": consecutive / max(log.n_events, 1),
                    "total": total, "total_share": total / max(log.n_events, 1)},
        "timestamp_ties": {"events": ties, "share": ties / max(log.n_events, 1)},
        "time": time,
    }


def shuffle_within_users(log: Interactions, rng: np.random.Generator) -> Interactions:
    """``log`` with each user's items in a random order (timestamps stay in place, so the order they
    define is the shuffled one)."""
    order = np.lexsort((rng.random(log.n_events), log.event_users()))
    return replace(log, items=log.items[order])
