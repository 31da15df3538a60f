"""Evaluation protocols and the protocol card.

- ``full`` (default): every item of the catalogue is a candidate.
- ``sampled``: the target plus ``n_negatives`` negatives drawn (seeded) uniformly or proportionally to
  popularity in the log, never from the user's history nor the target; with replacement (``replacement=True``,
  the default, as the SASRec reference code) or without (as the BERT4Rec reference code: repeats discarded,
  a row the popularity mass makes hard completed by the Gumbel top-k trick). Metric names carry the prefix ``sampled_`` and the card says how they were sampled.

Seen filtering (``exclude_seen``) removes every item of the user's history from the candidates; a
target that repeats a history item is then a miss (the filtered list could never contain it), and so is a
target outside the set's candidate items; the card counts both (``targets_never_rankable``). Each
evaluation set carries its protocol (:class:`~seqrec.data.splits.EvalSet`): leave-one-out and temporal
sets filter seen items, session sets keep them and rank only items with a training event.
Ties follow :mod:`seqrec.metrics` (default: expected value under random tie-breaking).
"""

from __future__ import annotations

import numpy as np
import torch

from seqrec import ranking
from seqrec.data.sequences import PERTURBATIONS
from seqrec.data.splits import EvalSet
from seqrec.errors import ConfigError, choose
from seqrec.ids import FIRST_ITEM
from seqrec.metrics import TIE_POLICIES, ranking_metrics
from seqrec.version import __version__

PROTOCOLS = ("full", "sampled")
SAMPLINGS = ("uniform", "popularity")


def evaluate(model, evalset: EvalSet, k=(10,), *, protocol: str = "full", exclude_seen: bool | None = None,
             tie_policy: str | tuple = "expected", n_negatives: int = 100, sampling: str = "uniform", seed: int = 0,
             batch_size: int = 256, split: dict | None = None, replacement: bool = True, perturb: str | None = None,
             perturb_seed: int = 0, rows: bool = False, top: int = 0) -> dict:
    """Metrics of ``model`` (anything with ``score(histories, out=None)`` and ``max_len``, or without
    ``max_len`` for a model that reads whole histories) on ``evalset``, with a protocol card. The sampled
    protocol scores only the sampled candidates where the model has ``score_candidates``.

    ``exclude_seen`` None (default) follows the protocol the set carries (see :class:`EvalSet`); so do its
    candidate items. ``tie_policy`` may be a tuple of policies: the metrics of the first are ``metrics``, and
    ``by_tie_policy`` holds each one's, from the same scores (and, sampled, the same negatives).

    ``perturb`` feeds the model changed histories (:data:`~seqrec.data.sequences.PERTURBATIONS`: ``shuffle``
    or ``reverse`` the items the model reads, ``last_item`` only, ``drop_last``; seeded by ``perturb_seed``)
    while the ranking protocol stays that of the true history (the same seen items filtered, the same
    targets), so a change in the metrics comes only from what the model reads. ``rows`` adds ``rows``: each
    metric per evaluation row [R] (in the set's row order; first tie policy); ``top`` (full protocol) adds
    ``top``: the best ``top`` internal item ids of each row [R, top], as ranked for the metrics.
    See :func:`perturbation_test` for the change with its confidence interval.
    """
    choose("protocol", protocol, PROTOCOLS)
    if perturb is not None:
        choose("perturbation", perturb, PERTURBATIONS)
    policies = (tie_policy,) if isinstance(tie_policy, str) else tuple(tie_policy)
    for policy in policies:
        choose("tie policy", policy, TIE_POLICIES)
    tie_policy = policies[0]
    choose("sampling", sampling, SAMPLINGS)
    ks = sorted({int(x) for x in k})
    if not ks or ks[0] < 1:
        raise ConfigError(f"k must be positive integers, got {list(k)}")
    if top and protocol != "full":
        raise ConfigError("top-k lists (top=...) come from the full protocol only")
    exclude_seen = evalset.exclude_seen if exclude_seen is None else exclude_seen
    n_items = evalset.log.n_items
    rng = np.random.default_rng(seed)
    perturb_rng = np.random.default_rng(perturb_seed)
    window = getattr(model, "max_len", None)
    popularity = np.bincount(evalset.log.items - FIRST_ITEM, minlength=n_items) if sampling == "popularity" else None
    candidates = ranking.candidate_mask(n_items, evalset.candidates)
    sums, n_filtered_targets = {policy: {} for policy in policies}, 0
    per_row = {}
    top_ids = np.zeros((len(evalset), top), dtype=np.int64) if top else None
    buffer = torch.empty(min(batch_size, len(evalset)), n_items)  # one reused CPU buffer (no page faults)
    order = np.argsort(np.minimum(evalset.cuts, window or 1), kind="stable")  # similar lengths
    for start in range(0, len(evalset), batch_size):  # batch together, so trimmed windows carry little padding
        rows_now = order[start:start + batch_size]
        histories = evalset.batch(rows_now)
        seen_rows, seen_items = histories.seen()
        read = histories if perturb is None else histories.perturbed(perturb, perturb_rng, window)
        if protocol == "sampled":
            negatives = _sample_negatives(rng, n_items, len(rows_now), n_negatives, seen_rows, seen_items,
                                          evalset.targets[rows_now], popularity, replacement)
            chosen = torch.from_numpy(np.concatenate([evalset.targets[rows_now][:, None], negatives], 1))
            if hasattr(model, "score_candidates"):
                scores = model.score_candidates(read, chosen, out=buffer[:len(rows_now)])
            else:
                scores = model.score(read, out=buffer[:len(rows_now)])
                scores = scores.gather(1, chosen.to(scores.device) - FIRST_ITEM)
            higher, tied = ranking.rank_counts(scores, torch.zeros(len(rows_now), dtype=torch.long,
                                                                   device=scores.device))
        else:
            scores = model.score(read, out=buffer[:len(rows_now)])  # on the model's device: ranked there
            targets = torch.from_numpy(evalset.targets[rows_now] - FIRST_ITEM).to(scores.device)
            ranking.restrict(scores, candidates)
            if exclude_seen:
                ranking.exclude(scores, seen_rows, seen_items)
            n_filtered_targets += int(torch.isinf(scores.gather(1, targets[:, None])).sum())
            higher, tied = ranking.rank_counts(scores, targets, max(ks))
            if top:
                top_ids[rows_now] = ranking.top_k(scores, top)[0]
        for policy in policies:
            for name, values in ranking_metrics(higher, tied, ks, policy).items():
                sums[policy][name] = sums[policy].get(name, 0.0) + float(values.sum())
                if rows and policy == tie_policy:
                    per_row.setdefault(name, np.zeros(len(evalset)))[rows_now] = values.cpu().numpy()
    prefix = "sampled_" if protocol == "sampled" else ""
    by_policy = {policy: {f"{prefix}{name}": value / max(len(evalset), 1) for name, value in totals.items()}
                 for policy, totals in sums.items()}
    metrics = by_policy[tie_policy]
    card = protocol_card(model, evalset, ks, protocol, exclude_seen, tie_policy, n_negatives, sampling, seed,
                         split, n_filtered_targets, replacement)
    if perturb is not None:
        card["perturbation"] = {"histories": perturb, "seed": perturb_seed,
                                "reordered": f"the last {window} items" if window else "the whole history",
                                "ranking": "the true history's protocol (same seen items filtered, same targets)"}
    result = {"metrics": metrics, "protocol": card}
    if len(policies) > 1:
        result["by_tie_policy"] = by_policy
    if rows:
        result["rows"] = {f"{prefix}{name}": values for name, values in per_row.items()}
    if top:
        result["top"] = top_ids
    return result


def perturbation_test(model, evalset: EvalSet, perturb: str = "shuffle", k=(10,), *, n_bootstrap: int = 1000,
                      alpha: float = 0.05, seed: int = 0, jaccard_k: int = 10, **options) -> dict:
    """Does ``model`` use the order of a history? Its metrics on ``evalset`` with the true histories and
    with ``perturb``-ed ones (see :func:`evaluate`; full protocol), and for every metric the relative change
    (perturbed / true - 1) with a paired user-level bootstrap interval (``n_bootstrap`` resamples of the
    evaluation rows, percentile interval at level ``1 - alpha``) and its two-sided bootstrap p-value; a
    change is significant when the interval excludes 0. ``jaccard@k``: the mean Jaccard similarity of each
    row's top-``jaccard_k`` lists (true vs perturbed), with its bootstrap interval.

    Deviation from "Does It Look Sequential?" (RecSys 2024): its code compares the two groups' per-user
    metrics with an unpaired bootstrap of the difference; here the bootstrap is paired (both evaluations are of
    the same users, so one resample serves both sides), and the interval is of the relative change the paper
    reports.
    """
    if n_bootstrap < 1 or not 0.0 < alpha < 1.0:
        raise ConfigError(f"need n_bootstrap >= 1 and 0 < alpha < 1, got {n_bootstrap}, {alpha}")
    if options.get("protocol", "full") != "full":
        raise ConfigError("perturbation_test ranks with the full protocol only (it compares top-k lists)")
    true = evaluate(model, evalset, k, rows=True, top=jaccard_k, **options)
    changed = evaluate(model, evalset, k, rows=True, top=jaccard_k, perturb=perturb, perturb_seed=seed, **options)
    names = list(true["rows"])
    jaccard = jaccard_rows(true["top"], changed["top"])
    columns = np.stack([true["rows"][n] for n in names] + [changed["rows"][n] for n in names] + [jaccard])
    draws = bootstrap_means(columns, n_bootstrap, np.random.default_rng(seed))
    m = len(names)
    change = {name: relative_change(columns[i].mean(), columns[m + i].mean(), draws[:, i], draws[:, m + i], alpha)
              for i, name in enumerate(names)}
    low, high = np.quantile(draws[:, -1], [alpha / 2, 1 - alpha / 2]) if len(jaccard) else (np.nan, np.nan)
    return {"perturbation": perturb, "n_rows": len(evalset), "true": true["metrics"],
            "perturbed": changed["metrics"], "change": change,
            f"jaccard@{jaccard_k}": {"mean": float(jaccard.mean()) if len(jaccard) else float("nan"),
                                     "low": float(low), "high": float(high)},
            "bootstrap": {"resamples": n_bootstrap, "level": 1 - alpha, "paired": True, "seed": seed},
            "protocol": changed["protocol"],
            "rows": {"true": true["rows"], "perturbed": changed["rows"], "jaccard": jaccard}}


def bootstrap_means(columns: np.ndarray, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """[n_bootstrap, M]: the means of the M per-row ``columns`` [M, R] over resamples of the R rows drawn
    with replacement; one resample serves every column (paired)."""
    n = columns.shape[1]
    out = np.full((n_bootstrap, len(columns)), np.nan)
    if n:
        for b in range(n_bootstrap):
            out[b] = columns[:, rng.integers(0, n, size=n)].mean(1)
    return out


def relative_change(true: float, changed: float, true_draws: np.ndarray, changed_draws: np.ndarray,
                    alpha: float = 0.05) -> dict:
    """changed / true - 1, with the percentile interval of the same ratio over paired bootstrap means and
    its two-sided p-value (twice the smaller share of resampled changes on either side of 0)."""
    result = {"true": float(true), "perturbed": float(changed), "relative": None, "low": None, "high": None,
              "p_value": None, "significant": False}
    if not true > 0:
        return result
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = changed_draws / true_draws - 1
    draws = draws[np.isfinite(draws)]
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    p_value = min(1.0, 2 * min((draws <= 0).mean(), (draws >= 0).mean()))
    return {**result, "relative": float(changed / true - 1), "low": float(low), "high": float(high),
            "p_value": float(p_value), "significant": bool(low > 0 or high < 0)}


def jaccard_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[R] Jaccard similarity |A ∩ B| / |A ∪ B| of each row's item lists (ids within a row are distinct)."""
    if a.size == 0:
        return np.zeros(len(a))
    common = (a[:, :, None] == b[:, None, :]).any(2).sum(1)
    return common / (a.shape[1] + b.shape[1] - common)


def protocol_card(model, evalset, ks, protocol, exclude_seen, tie_policy, n_negatives, sampling, seed, split,
                  n_filtered_targets, replacement=True) -> dict:
    if protocol == "full":
        candidates = f"full ranking: {evalset.protocol()['candidates']}"
    else:
        candidates = (f"SAMPLED: target + {n_negatives} negatives drawn {sampling}ly "
                      f"({'with' if replacement else 'without'} replacement, never from the history), "
                      "not comparable to full ranking")
    return {
        "seqrec_version": __version__,
        "dataset": evalset.log.summary(),
        "split": split or {"name": evalset.name},
        "evaluated": evalset.name,
        "n_eval": len(evalset),
        "protocol": protocol,
        "candidates": candidates,
        "seen_filtering": bool(exclude_seen) if protocol == "full" else "negatives never from the history",
        "targets_never_rankable": n_filtered_targets,
        "tie_policy": tie_policy,
        "k": list(ks),
        "seed": seed,
        "model": model.describe() if hasattr(model, "describe") else type(model).__name__,
    }


def _sample_negatives(rng, n_items, n_rows, n_negatives, seen_rows, seen_items, targets, popularity,
                      replacement=True):
    """[R, n_negatives] internal ids, never in the row's history nor its target."""
    p = None
    if popularity is not None:
        p = popularity / popularity.sum()
        cdf = np.cumsum(p)
        cdf /= cdf[-1]
        draw = lambda size: np.minimum(np.searchsorted(cdf, rng.random(size), side="right"),  # noqa: E731
                                       n_items - 1) + FIRST_ITEM
    else:
        draw = lambda size: rng.integers(FIRST_ITEM, FIRST_ITEM + n_items, size=size)  # noqa: E731
    width = n_items + FIRST_ITEM
    forbidden = np.unique(np.concatenate([seen_rows * width + seen_items, np.arange(n_rows) * width + targets]))
    if not replacement:
        return _distinct(rng, draw, p, n_items, n_rows, n_negatives, forbidden, width)
    negatives = draw((n_rows, n_negatives))
    row_ids = np.repeat(np.arange(n_rows), n_negatives).reshape(n_rows, n_negatives)
    for _ in range(1000):
        clash = np.isin(row_ids * width + negatives, forbidden)
        if not clash.any():
            return negatives
        negatives[clash] = draw(int(clash.sum()))
    raise ConfigError("cannot sample negatives: some user's history covers nearly the whole catalogue")


def _distinct(rng, draw, p, n_items: int, n_rows: int, n: int, forbidden: np.ndarray, width: int,
              rounds: int = 8) -> np.ndarray:
    """[R, n] distinct draws per row outside ``forbidden`` (keys ``row * width + item``), without replacement
    (as the BERT4Rec reference): items drawn one after another, a repeat or a forbidden item discarded,
    vectorised over rows; rows still short after ``rounds`` (a history holding most of the popularity mass)
    are completed exactly by the Gumbel top-k trick over the items they may still take."""
    if n > n_items:
        raise ConfigError(f"cannot draw {n} distinct negatives from a catalogue of {n_items} items")
    out = np.zeros((n_rows, n), dtype=np.int64)  # 0 (PAD) = not filled yet
    left = np.arange(n_rows)
    for _ in range(rounds):
        if len(left) == 0:
            return out
        drawn = draw((len(left), 2 * n + 8))
        values = np.concatenate([out[left], drawn], 1)  # the rows' items so far come first: they stay
        rows = np.arange(len(left))[:, None]
        first = np.zeros(values.size, dtype=bool)
        first[np.unique((rows * width + values).ravel(), return_index=True)[1]] = True
        valid = first.reshape(values.shape) & (values != 0) & ~np.isin(left[:, None] * width + values, forbidden)
        rank = np.cumsum(valid, 1) - 1
        keep = valid & (rank < n)
        filled = np.zeros((len(left), n), dtype=np.int64)
        filled[np.nonzero(keep)[0], rank[keep]] = values[keep]
        out[left] = filled
        left = left[keep.sum(1) < n]
    if len(left):
        with np.errstate(divide="ignore"):
            log_p = np.log(p) if p is not None else np.zeros(n_items)
        keys = log_p[None, :] - np.log(-np.log(rng.random((len(left), n_items)).clip(1e-300, 1 - 1e-16)))
        banned = forbidden[np.isin(forbidden // width, left)]
        keys[np.searchsorted(left, banned // width), banned % width - FIRST_ITEM] = -np.inf
        have = out[left]
        r, c = np.nonzero(have)
        keys[r, have[r, c] - FIRST_ITEM] = np.inf  # what a row already drew stays first
        chosen = np.argpartition(-keys, n - 1, axis=1)[:, :n]
        if np.isneginf(np.take_along_axis(keys, chosen, 1)).any():
            raise ConfigError(f"cannot draw {n} distinct negatives: some user's history leaves fewer items "
                              "outside it")
        out[left] = chosen + FIRST_ITEM
    return out
