"""Sequential rules: item n-grams inside users' sequences, on the true order and on shuffled orders.

A rule of order n is a run of n consecutive items of one user, ``a -> b`` (n = 2) or ``a, b -> c`` (n = 3).
Its support is the number of times the run occurs; its confidence is the support divided by the number
of occurrences of its first n - 1 items (for n = 2: every occurrence of ``a``, last positions included),
as the code of "Does It Look Sequential?" (Klenitskiy et al., RecSys 2024) counts them. A rule *holds*
when support > ``support`` and confidence > ``confidence`` (both strict, as there). Shuffling each user's
sequence keeps every user's items and breaks their order; rules that survive it were never about order.

Counting is vectorised: n-grams get integer ids order by order (the id of ``a, b`` and the item ``c`` make
the key of ``a, b, c``), counted with ``np.unique``; no Python loop per event.
"""

from __future__ import annotations

import numpy as np

from seqrec.analysis.statistics import shuffle_within_users
from seqrec.data.interactions import Interactions
from seqrec.errors import ConfigError


def count_rules(log: Interactions, orders=(2, 3), support: float = 5, confidence: float = 0.1) -> dict:
    """For each order n: ``ngrams`` (distinct n-grams), ``supported`` (support > ``support``),
    ``confident`` (confidence > ``confidence``) and ``rules`` (both)."""
    orders = sorted({int(n) for n in orders})
    if not orders or orders[0] < 2:
        raise ConfigError(f"rule orders must be integers >= 2, got {orders}")
    users = log.event_users()
    width = log.n_items + 1
    gram = log.items.astype(np.int64)  # ids of the 1-grams starting at each position
    valid = np.ones(log.n_events, dtype=bool)  # the n-gram starting here stays inside one user
    counts = np.bincount(gram, minlength=width)  # occurrences of each (n-1)-gram id
    out = {}
    for n in range(2, orders[-1] + 1):
        span = n - 1
        valid = valid[:-1] & (users[span:] == users[:-span])
        keys = gram[:-1][valid] * width + log.items[span:][valid]
        ids, inverse, support_n = np.unique(keys, return_inverse=True, return_counts=True)
        prefix = counts[gram[:-1][valid]]  # occurrences of each n-gram's first n - 1 items
        first = np.zeros(len(ids), dtype=np.int64)
        first[inverse] = prefix
        conf = support_n / first
        if n in orders:
            supported, confident = support_n > support, conf > confidence
            out[n] = {"ngrams": int(len(ids)), "supported": int(supported.sum()), "confident": int(confident.sum()),
                      "rules": int((supported & confident).sum())}
        next_gram = np.full(len(valid), -1, dtype=np.int64)
        next_gram[valid] = inverse
        gram, counts = next_gram, support_n
    return out


def rules_test(log: Interactions, orders=(2, 3), support: float = 5, confidence: float = 0.1,
               seeds=(0, 1, 2, 3, 4)) -> dict:
    """Rules on the true sequences and on each seed's shuffle; per order: the true count, the shuffled
    counts (mean, std, each), and the relative change of the mean (shuffled / true - 1; None without
    true rules)."""
    if not len(seeds):
        raise ConfigError("the rules test needs at least one shuffle seed")
    true = count_rules(log, orders, support, confidence)
    shuffled = [count_rules(shuffle_within_users(log, np.random.default_rng(s)), orders, support, confidence)
                for s in seeds]
    result = {}
    for n, counted in true.items():
        values = np.array([s[n]["rules"] for s in shuffled], dtype=np.float64)
        result[f"{n}-gram"] = {
            "order": n, "true": counted["rules"], "true_detail": counted,
            "shuffled_mean": float(values.mean()), "shuffled_std": float(values.std()),
            "shuffled": [int(v) for v in values],
            "relative_change": float(values.mean() / counted["rules"] - 1) if counted["rules"] else None}
    return {"support": support, "confidence": confidence, "seeds": list(seeds), "orders": result}
