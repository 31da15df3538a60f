"""Does it look sequential? The audit of Klenitskiy et al., "Does It Look Sequential? An Analysis of Datasets
for Evaluation of Sequential Recommendations" (RecSys 2024), as one function.

:func:`analyze` reads a log (path, DataFrame or :class:`Interactions`), applies the paper's preprocessing
(iterative 5-core with consecutive repeats removed, by default), and measures:

1. statistics of the raw and the preprocessed log (:func:`~seqrec.analysis.statistics.dataset_statistics`);
2. sequential rules (item 2- and 3-grams with support > 5 and confidence > 0.1) on the true sequences and
   on sequences shuffled within each user, several seeds (:mod:`seqrec.analysis.rules`);
3. the model-based test: SASRec and GRU4Rec trained on the true training data with the paper's settings
   (dim 64, max_len 128, full cross-entropy, Adam 1e-3, batch 128, early stopping on validation NDCG@10
   with patience 5), then the test users evaluated with their true and their shuffled histories
   (:func:`seqrec.evaluate.perturbation_test`: relative change of HR@10 and NDCG@10 with a paired
   user-level bootstrap interval, and Jaccard@10 of the two top-10 lists);
4. a verdict with stated thresholds (:data:`VERDICTS`, :func:`verdict`);
5. split diagnostics: leakage of a leave-one-out test in global time, cold users and items of a temporal one.

Split: the paper's global temporal split at the 0.9 timestamp quantile, predicting each test user's last
event from all their earlier ones (``temporal_split(..., target="last")``, as the paper's code). A log whose
timestamps are only positions in each sequence (the published SASRec / BERT4Rec / S3-Rec files) has no
global time: ``split="auto"`` then uses leave-one-out (the last event of every user) and says so.

Deviations, each stated in the report: the bootstrap is paired (the paper's code resamples the two groups
independently); validation is the last training event of up to ``valid_users`` users (the paper holds 500
users out of training); ``time_budget`` caps each model's training on a slow machine (the report says when
it stopped a model); the ranking keeps seen items (``exclude_seen=False``, the paper's ``filter_seen``),
which an option changes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from seqrec.analysis.rules import rules_test
from seqrec.analysis.statistics import dataset_statistics, timestamps_are_positions
from seqrec.data.interactions import Interactions, from_frame
from seqrec.data.splits import Split, leave_one_out, temporal_split
from seqrec.errors import ConfigError
from seqrec.evaluate import perturbation_test
from seqrec.ids import FIRST_ITEM
from seqrec.models import DEVICES, build
from seqrec.options import between, option
from seqrec.runs import LogOptions

log = logging.getLogger(__name__)

SPLITS = ("auto", "temporal", "loo")
AUDIT_MODELS = ("sasrec", "gru4rec")
VERDICTS = ("sequential", "weakly sequential", "not sequential")
LABELS = {"sasrec": "SASRec", "gru4rec": "GRU4Rec"}

# The paper's model settings (its runs/conf: SASRec 64 hidden, 2 blocks, 2 heads, dropout 0.1; GRU4Rec
# input and hidden 64, one layer, dropout 0.1; both max_len 128, full softmax, Adam 1e-3, batch 128).
MODEL_PARAMS = {
    "sasrec": {"loss": "ce", "dim": 64, "n_blocks": 2, "n_heads": 2, "dropout": 0.1},
    "gru4rec": {"loss": "ce", "dim": 64, "input_dim": 64, "n_blocks": 1, "hidden_dropout": 0.1,
                "batching": "padded", "n_negatives": 0, "optimizer": "adam"},
}


class AuditOptions(LogOptions):
    """The options of the sequentiality audit (the log's filters default to the paper's preprocessing:
    iterative 5-core, consecutive repeats dropped)."""

    DEFAULTS = {"min_user_events": 5, "min_item_events": 5, "drop_repeats": True}

    support: float = option(5, "a rule holds when its support (occurrences) exceeds this", check=between(0),
                            group="rules")
    confidence: float = option(0.1, "... and its confidence exceeds this", check=between(0, 1), group="rules")
    rule_seeds: int = option(5, "shuffles the rules are counted on", check=between(1), group="rules")
    models: list[str] = option(AUDIT_MODELS, "models of the model-based test ('none' skips it)",
                               group="models")
    split: str = option("auto", "temporal (the paper's), loo, or auto: temporal unless the timestamps are "
                                "only positions", choices=SPLITS, group="models")
    quantile: float = option(0.9, "temporal split: the timestamp quantile of the boundary",
                             check=between(0, 1, low_open=True, high_open=True), group="models")
    valid_users: int | None = option(5000, "validate on this many random users (None: all)",
                                     check=between(1, none_ok=True), group="models")
    max_len: int = option(128, "items of a history the models read (the paper's 128)", check=between(1),
                          group="models")
    epochs: int = option(100, "maximum training epochs", check=between(1), group="models")
    patience: int = option(5, "early-stopping patience in epochs (the paper's 5)", check=between(1),
                           group="models")
    time_budget: float | None = option(300.0, "seconds of training per model (None: no limit)",
                                       check=between(0, low_open=True, none_ok=True), group="models")
    device: str = option("cpu", "cpu, cuda or cuda:N", choices=DEVICES, group="models")
    exclude_seen: bool = option(False, "filter the history's items out of rankings (the paper does not)",
                                group="models")
    seed: int = option(0, "seed of the split, training, shuffles and bootstrap", group="models")
    n_bootstrap: int = option(1000, "bootstrap resamples of the test users", check=between(1), group="verdict")
    alpha: float = option(0.05, "significance level (a 1 - alpha interval)",
                          check=between(0, 1, low_open=True, high_open=True), group="verdict")
    strong_drop: float = option(0.2, "a significant NDCG@10 drop at least this large (relative) means "
                                     "sequential", check=between(0, 1), group="verdict")
    weak_drop: float = option(0.1, "... at least this large, weakly sequential (a smaller one, even significant, "
                                   "is negligible: not sequential)", check=between(0, 1), group="verdict")
    rules_strong: float = option(0.9, "without models: a 2-gram rule drop at least this large means sequential",
                                 check=between(0, 1), group="verdict")
    rules_weak: float = option(0.5, "without models: ... at least this large, weakly sequential",
                               check=between(0, 1), group="verdict")
    progress: bool = option(False, "show training progress bars", group="models")

    def validate(self) -> None:
        super().validate()
        if self.weak_drop > self.strong_drop or self.rules_weak > self.rules_strong:
            raise ConfigError(f"the weak thresholds must not exceed the strong ones: weak_drop {self.weak_drop}, "
                              f"strong_drop {self.strong_drop}, rules_weak {self.rules_weak}, rules_strong "
                              f"{self.rules_strong}")

    def model_names(self) -> list[str]:
        names = [m.strip().lower() for m in self.models if m.strip()]
        if names in ([], ["none"]):
            return []
        unknown = sorted(set(names) - set(AUDIT_MODELS))
        if unknown:
            raise ConfigError(f"models {unknown} are not part of the audit; choose from {list(AUDIT_MODELS)} "
                              "or 'none'")
        return names


@dataclass
class Audit:
    """The audit's findings (:meth:`to_dict` is the JSON, :meth:`summary` its short form)."""

    source: str
    options: dict
    raw: dict
    preprocessing: list
    stats: dict
    rules: dict
    split: dict
    models: list = field(default_factory=list)
    verdict: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    jaccard_rows: dict = field(default_factory=dict, repr=False)  # model -> [R] (for the report's plot)
    lengths: np.ndarray | None = field(default=None, repr=False)  # preprocessed sequence lengths (plot)

    def to_dict(self) -> dict:
        return {"source": self.source, "verdict": self.verdict, "options": self.options, "raw": self.raw,
                "preprocessing": self.preprocessing, "statistics": self.stats, "rules": self.rules,
                "split": self.split, "models": self.models, "seconds": self.seconds}

    def summary(self) -> dict:
        """Verdict, rule changes, metric changes with intervals, Jaccard@10."""
        return {
            "source": self.source, "verdict": self.verdict["verdict"], "basis": self.verdict["basis"],
            "rules": {name: {"true": r["true"], "shuffled_mean": r["shuffled_mean"],
                             "relative_change": r["relative_change"]} for name, r in self.rules["orders"].items()},
            "models": {m["model"]: {**{name: {k: c[k] for k in ("true", "perturbed", "relative", "low", "high",
                                                                 "p_value", "significant")}
                                       for name, c in m["change"].items() if name in ("HR@10", "NDCG@10")},
                                    "jaccard@10": m["jaccard@10"]["mean"]} for m in self.models},
            "split": self.split["kind"],
        }

    def write(self, out) -> dict:
        """Write report.md, report.html, audit.json, summary.json and the plots to ``out``; returns their paths."""
        from seqrec.analysis.report import write_report
        return write_report(self, Path(out))


def analyze(data, options: AuditOptions | None = None, *, params: dict | None = None, **overrides) -> Audit:
    """Audit ``data`` (a path, a DataFrame with the option's columns, or :class:`Interactions` taken as the
    raw log); ``overrides`` are :class:`AuditOptions`; ``params`` maps a model name to options that replace
    the paper's settings (:data:`MODEL_PARAMS`), e.g. ``{"sasrec": {"dim": 32}}``."""
    options = (options or AuditOptions()).clone().set_params(**overrides)
    options.validate()
    models = options.model_names()
    params = params or {}
    unknown = sorted(set(params) - set(models))
    if unknown:
        raise ConfigError(f"params for {unknown}, which this audit does not train (models: {models})")
    seconds = {}
    started = time.perf_counter()
    raw = _raw_log(data, options)
    positional = timestamps_are_positions(raw)
    prepared = _preprocess(raw, options)
    seconds["read_and_preprocess"] = time.perf_counter() - started
    stats = dataset_statistics(prepared, positions_only=positional)  # filtering leaves gaps in the positions
    raw_stats = dataset_statistics(raw, positions_only=positional)

    started = time.perf_counter()
    rules = rules_test(prepared, (2, 3), options.support, options.confidence,
                       seeds=tuple(range(options.seed, options.seed + options.rule_seeds)))
    seconds["rules"] = time.perf_counter() - started

    split, split_info = _split(prepared, options, positional)
    results, jaccard = [], {}
    for name in models:
        started = time.perf_counter()
        result, rows = _model_test(name, split, options, params.get(name, {}))
        result["seconds"] = time.perf_counter() - started
        seconds[name] = result["seconds"]
        results.append(result)
        jaccard[name] = rows
    audit = Audit(source=raw.source, options=options.get_params(), raw=raw_stats, preprocessing=prepared.report,
                  stats=stats, rules=rules, split=split_info, models=results, seconds=seconds,
                  jaccard_rows=jaccard, lengths=prepared.lengths)
    audit.verdict = verdict(audit, options)
    return audit


def _raw_log(data, options: AuditOptions) -> Interactions:
    return data if isinstance(data, Interactions) else options.read(data, filtered=False)


def _preprocess(raw: Interactions, options: AuditOptions) -> Interactions:
    """The raw log through the options' filters (counts of what each removed are in ``report``)."""
    if not (options.drop_repeats or options.min_user_events > 1 or options.min_item_events > 1):
        return raw
    frame = pd.DataFrame({"user": np.repeat(raw.vocab.users, raw.lengths),
                          "item": np.asarray(raw.vocab.items)[raw.items - FIRST_ITEM], "time": raw.times})
    return from_frame(frame, raw.source, **options.filters())


def _split(log_: Interactions, options: AuditOptions, positional: bool) -> tuple[Split, dict]:
    kind = options.split
    reason = "chosen"
    if kind == "auto":
        kind = "loo" if positional else "temporal"
        reason = ("the timestamps are only positions in each sequence (no global time): leave-one-out, the last "
                  "event of every user" if positional else "the paper's global temporal split")
    if kind == "temporal" and positional:
        raise ConfigError(f"{log_.source}: the timestamps are only positions in each sequence; a global temporal "
                          "split needs real times (use --split loo)")
    if kind == "temporal":
        split = temporal_split(log_, options.quantile, options.valid_users, options.seed, target="last")
    else:
        split = leave_one_out(log_, options.valid_users, options.seed)
    info = {"kind": kind, "reason": reason, "card": split.card(), **split_diagnostics(split, positional)}
    return split, info


def split_diagnostics(split: Split, positional: bool) -> dict:
    """Leave-one-out: how many test targets happen, in global time, before training events of other users
    (the model trained on the future of the moment it is tested at). Temporal: cold users (no training
    event) and cold items (targets and history events whose item has no training event)."""
    test, train = split.test, split.train
    targets = test.targets
    trained = np.zeros(split.log.n_items + FIRST_ITEM, dtype=bool)
    trained[train.items] = True
    history = test.batch()
    _, history_items = history.seen()
    cold = {"test_users": len(test),
            "cold_users": int((split.train_lengths[test.users] == 0).sum()),
            "cold_target_items": int((~trained[targets]).sum()),
            "cold_history_events": int((~trained[history_items]).sum()),
            "history_events": int(len(history_items))}
    if split.kind == "temporal":
        return {"leakage": {"measurable": True, "targets_before_other_training_events": 0,
                            "note": "none by construction: every training event precedes the boundary"},
                "cold": cold}
    if positional:
        return {"leakage": {"measurable": False,
                            "note": "the timestamps are only positions: when each event happened is unknown, so "
                                    "a leave-one-out test may be trained on its own future without it showing"},
                "cold": cold}
    times = np.asarray(split.log.times, dtype=np.float64)
    target_times = times[test.log.offsets[test.users] + test.cuts]
    train_times = np.sort(np.asarray(train.times, dtype=np.float64))
    later = len(train_times) - np.searchsorted(train_times, target_times, side="right")  # own events are earlier
    return {"leakage": {"measurable": True,
                        "targets_before_other_training_events": int((later > 0).sum()),
                        "share_of_targets": float((later > 0).mean()),
                        "mean_share_of_training_events_after_target": float((later / max(len(train_times), 1)).mean()),
                        "note": "share of test targets that happen before some training event of another user"},
            "cold": cold}


def _model_test(name: str, split: Split, options: AuditOptions, overrides: dict) -> tuple[dict, np.ndarray]:
    params = {**MODEL_PARAMS[name], "max_len": options.max_len, "epochs": options.epochs,
              "patience": options.patience, "time_budget": options.time_budget, "device": options.device,
              "seed": options.seed, "progress": options.progress, "lr": 1e-3, "batch_size": 128, **overrides}
    model = build(name, params)
    log.info("audit: training %s (%s)", name, ", ".join(f"{k}={v}" for k, v in params.items()))
    model.fit(split.train, valid=split.valid)
    test = replace(split.test, exclude_seen=options.exclude_seen)
    result = perturbation_test(model, test, "shuffle", k=(10,), n_bootstrap=options.n_bootstrap,
                               alpha=options.alpha, seed=options.seed)
    trained = model.train_result_
    jaccard = result.pop("rows")["jaccard"]
    return {"model": name, "params": model.get_params(),
            "training": {"epochs": len(trained.epochs), "best_epoch": trained.best_epoch,
                         "best_valid_ndcg10": trained.best_metric, "stop_reason": trained.stop_reason},
            **result}, jaccard


def verdict(audit: Audit, options: AuditOptions) -> dict:
    """sequential / weakly sequential / not sequential, and why.

    With the model-based test: *sequential* when some model's NDCG@10 falls significantly (its interval
    lies below 0) by at least ``strong_drop`` (relative); *weakly sequential* when the largest significant
    fall is at least ``weak_drop``; *not sequential* otherwise: no significant fall, or only one too small to
    matter (with tens of thousands of test users a paired test finds drops of a few percent significant).
    On the paper's table these thresholds give Beauty and Games (drops of 17-43 %, significant)
    *sequential* and Diginetica (-7 % and -16 %, not significant) *not sequential*.
    Rules only (``models=none``): *sequential* when the 2-gram rules fall by at least ``rules_strong``,
    *weakly* by at least ``rules_weak``, else *not*; less reliable (the paper's Steam and Yelp lose nearly
    all their rules, yet their models do not use order), and the report says so.
    """
    thresholds = {"strong_drop": options.strong_drop, "weak_drop": options.weak_drop, "alpha": options.alpha,
                  "metric": "NDCG@10"}
    if audit.models:
        drops = []
        for m in audit.models:
            c = m["change"]["NDCG@10"]
            if c["relative"] is not None and c["significant"] and c["relative"] < 0:
                drops.append((-c["relative"], m["model"]))
        largest = max(drops) if drops else (0.0, None)
        name = ("sequential" if largest[0] >= options.strong_drop else
                "weakly sequential" if drops and largest[0] >= options.weak_drop else "not sequential")
        shown = "; ".join(_model_line(m) for m in audit.models)
        if not drops:
            why = f"No model's drop is significant at the {1 - options.alpha:.0%} level."
        else:
            who = f"The largest significant drop, {largest[0]:.0%} ({LABELS.get(largest[1], largest[1])}), is"
            why = {"sequential": f"{who} at least {options.strong_drop:.0%}.",
                   "weakly sequential": f"{who} at least {options.weak_drop:.0%} but below {options.strong_drop:.0%}.",
                   "not sequential": f"{who} below {options.weak_drop:.0%}: too small to matter."}[name]
        return {"verdict": name, "basis": "model-based test", "thresholds": thresholds,
                "reason": f"NDCG@10 with shuffled histories: {shown}. {why}"}
    rule = audit.rules["orders"].get("2-gram", {})
    change = rule.get("relative_change")
    thresholds = {"rules_strong": options.rules_strong, "rules_weak": options.rules_weak, "metric": "2-gram rules"}
    if change is None:
        return {"verdict": "not sequential", "basis": "rules only (less reliable than the model-based test)",
                "thresholds": thresholds,
                "reason": "No 2-gram rule holds even on the true order: the rules find no sequential pattern (in "
                          "dense logs of long sequences few pairs reach the confidence threshold; the model-based "
                          "test can still find one)."}
    drop = -change
    name = ("sequential" if drop >= options.rules_strong else "weakly sequential" if drop >= options.rules_weak
            else "not sequential")
    return {"verdict": name, "basis": "rules only (less reliable than the model-based test)",
            "thresholds": thresholds,
            "reason": f"2-gram rules fall from {rule['true']} to {rule['shuffled_mean']:.1f} on shuffled sequences "
                      f"({change:+.0%}); thresholds: a drop of {options.rules_strong:.0%} or more is sequential, "
                      f"{options.rules_weak:.0%} or more weakly sequential."}


def _model_line(m: dict) -> str:
    c = m["change"]["NDCG@10"]
    if c["relative"] is None:
        return f"{LABELS.get(m['model'], m['model'])} has NDCG@10 0 on true histories (no test)"
    return (f"{LABELS.get(m['model'], m['model'])} {c['relative']:+.1%} [{c['low']:+.1%}, {c['high']:+.1%}]"
            f"{', significant' if c['significant'] else ', not significant'}")
