"""Reproduction of published result tables: train each model of a paper's table on the paper's data file,
evaluate it with the paper's sampled protocol and with full ranking, and compare with the published row.

``seqrec reproduce`` lists the tables; ``seqrec reproduce TABLE [--models a,b] [--seeds 0,1,2] [--quick]``
runs one and writes ``results.json``, ``table.md`` and ``chart.png`` to ``--out``. Every table shares the
library's data, split, training and evaluation code (:func:`seqrec.evaluate` with ``protocol="sampled"``);
nothing here ranks or counts on its own.

What a table fixes (see :data:`TABLES` and ``docs/reproduce.md``): the data file (its sha256 is checked;
another file can be given and is labelled as such), the split (leave-one-out: the last item is the test
target, the one before the validation target), the sampled protocol (number of negatives, uniform or
popularity, with or without replacement, how many test users), the metrics and the published numbers. Each
model is trained on the training part with early stopping on full-ranking validation NDCG@10 (a random
subset of ``VALID_USERS`` validation users), within a per-model time budget, and tested on the same test
users with both protocols. The papers' code breaks score ties in the positive's favour (``optimistic``);
our default (``expected``) is honest, and the table reports the paper's tie handling beside it where they
differ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from seqrec.data.interactions import read_interactions
from seqrec.data.splits import leave_one_out
from seqrec.errors import ConfigError, choose
from seqrec.evaluate import evaluate
from seqrec.models import build
from seqrec.runs import training_summary
from seqrec.version import __version__

log = logging.getLogger(__name__)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
VALID_USERS = 5000  # validation users of the early stopping (full ranking)
QUICK_USERS = 1500  # --quick: the first users of the file
QUICK = {"epochs": 1, "patience": 1}


@dataclass(frozen=True)
class Entry:
    label: str  # the paper's column name
    model: str  # seqrec.MODELS name
    params: dict = field(default_factory=dict)
    budget: float | None = None  # seconds of training (validation included) on this 2-core CPU
    note: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    paper: str
    dataset: str  # folder under ../shared/datasets
    sha256: str
    n_negatives: int
    sampling: str  # uniform | popularity
    replacement: bool
    eval_users: int | None  # evaluate this many random test users (None: all)
    ks: tuple
    metrics: tuple  # reported, in the paper's order ("MRR" is MRR over the whole candidate list)
    entries: tuple
    published: dict  # label -> {metric: value}
    protocol_text: str

    def entry(self, label: str) -> Entry:
        return {e.label: e for e in self.entries}[label]


_SASREC_DIM = {"dim": 50}  # "the latent dimension d is 50 for all methods" (SASRec, Sec. IV-A)
SASREC_TABLE = Table(
    name="sasrec-table",
    paper="Kang & McAuley, Self-Attentive Sequential Recommendation, ICDM 2018, Table III ('Games')",
    dataset="amazon-video-games-sasrec",
    sha256="b90e875dabf7aa5ea5f1a0c9a1b1db6e76a7be1c9269209da5f1a76a5d911243",
    n_negatives=100, sampling="uniform", replacement=True, eval_users=10_000,
    ks=(10,), metrics=("HR@10", "NDCG@10"),
    entries=(
        Entry("PopRec", "poprec"),
        Entry("BPR", "bprmf", _SASREC_DIM, 300),
        Entry("FMC", "fmc", _SASREC_DIM, 300),
        Entry("FPMC", "fpmc", _SASREC_DIM, 300),
        Entry("TransRec", "transrec", _SASREC_DIM, 300),
        Entry("GRU4Rec", "gru4rec", {**_SASREC_DIM, "loss": "top1_max", "n_negatives": 0}, 600,
              "TOP1-max over mini-batch negatives (the 2016 TOP1 is not offered)"),
        Entry("GRU4Rec+", "gru4rec+", _SASREC_DIM, 600),
        Entry("Caser", "caser", {}, 900),
        Entry("SASRec", "sasrec", {**_SASREC_DIM, "loss": "bce", "dropout": 0.5, "max_len": 50}, 1500,
              "the paper's BCE with one negative, dropout 0.5 (its Amazon setting)"),
    ),
    published={"PopRec": {"HR@10": 0.4724, "NDCG@10": 0.2779}, "BPR": {"HR@10": 0.4853, "NDCG@10": 0.2875},
               "FMC": {"HR@10": 0.6358, "NDCG@10": 0.4456}, "FPMC": {"HR@10": 0.6802, "NDCG@10": 0.4680},
               "TransRec": {"HR@10": 0.6838, "NDCG@10": 0.4557}, "GRU4Rec": {"HR@10": 0.2938, "NDCG@10": 0.1837},
               "GRU4Rec+": {"HR@10": 0.6599, "NDCG@10": 0.4759}, "Caser": {"HR@10": 0.5282, "NDCG@10": 0.3214},
               "SASRec": {"HR@10": 0.7410, "NDCG@10": 0.5360}},
    protocol_text="leave-one-out; 100 negatives drawn uniformly (with replacement) from items outside the "
                  "user's history; 10,000 random test users (the dataset has more); HR@10 and NDCG@10",
)

_BERT_METRICS = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")
_BERT_DIM = {"dim": 64}  # "the dimensionality of the hidden representation d ... 64" for every model
BERT4REC_TABLE = Table(
    name="bert4rec-table",
    paper="Sun et al., BERT4Rec, CIKM 2019, Table 2 ('Beauty')",
    dataset="amazon-beauty-bert4rec",
    sha256="9659c971de557657b510274784639f97ba18393fff3bedb1e227e27fda56b307",
    n_negatives=100, sampling="popularity", replacement=False, eval_users=None,
    ks=(1, 5, 10), metrics=_BERT_METRICS,
    entries=(
        Entry("POP", "poprec"),
        Entry("BPR-MF", "bprmf", _BERT_DIM, 300),
        Entry("NCF", "ncf", {"dim": 16}, 600, "predictive factors 16 (MLP tower 128-64-32-16)"),
        Entry("FPMC", "fpmc", _BERT_DIM, 300),
        Entry("GRU4Rec", "gru4rec", {**_BERT_DIM, "loss": "top1_max", "n_negatives": 0}, 600,
              "TOP1-max over mini-batch negatives (the 2016 TOP1 is not offered)"),
        Entry("GRU4Rec+", "gru4rec+", _BERT_DIM, 600),
        Entry("Caser", "caser", _BERT_DIM, 900),
        Entry("SASRec", "sasrec", {**_BERT_DIM, "loss": "bce", "dropout": 0.5, "max_len": 50}, 1500,
              "the SASRec paper's BCE with one negative"),
        Entry("BERT4Rec", "bert4rec", {**_BERT_DIM, "max_len": 50, "mask_prob": 0.6, "bucketing": True}, 2400,
              "the paper's Beauty settings (d 64, 2 blocks, 2 heads, mask probability 0.6)"),
    ),
    published={label: dict(zip(_BERT_METRICS, values)) for label, values in (
        ("POP", (.0077, .0392, .0762, .0230, .0349, .0437)),
        ("BPR-MF", (.0415, .1209, .1992, .0814, .1064, .1006)),
        ("NCF", (.0407, .1305, .2142, .0855, .1124, .1043)),
        ("FPMC", (.0435, .1387, .2401, .0902, .1211, .1056)),
        ("GRU4Rec", (.0402, .1315, .2343, .0812, .1074, .1023)),
        ("GRU4Rec+", (.0551, .1781, .2654, .1172, .1453, .1299)),
        ("Caser", (.0475, .1625, .2590, .1050, .1360, .1205)),
        ("SASRec", (.0906, .1934, .2653, .1436, .1633, .1536)),
        ("BERT4Rec", (.0953, .2207, .3025, .1599, .1862, .1701)),
    )},
    protocol_text="leave-one-out; 100 negatives sampled by popularity without replacement, outside the "
                  "user's history; every test user; HR@1/5/10, NDCG@5/10, MRR",
)

TABLES = {t.name: t for t in (SASREC_TABLE, BERT4REC_TABLE)}


def describe_tables() -> str:
    """The tables ``seqrec reproduce`` knows, one paragraph each."""
    return "\n\n".join(f"{t.name}: {t.paper}\n  data: ../shared/datasets/{t.dataset} (sha256 {t.sha256[:16]}...)\n"
                       f"  protocol: {t.protocol_text}\n  models: {', '.join(e.label for e in t.entries)}"
                       for t in TABLES.values())


def fingerprint(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_table(name: str, out, *, models: list[str] | None = None, seeds=(0,), quick: bool = False,
              data: Path | None = None, device: str = "cpu", time_budget: dict | None = None,
              progress: bool = False) -> dict:
    """Train and evaluate the table's models (labels ``models``, default all) for every seed; write
    ``results.json``, ``table.md`` and ``chart.png`` to ``out``; return the results.

    ``time_budget`` maps a label (or None, for every other model) to seconds of training; default: the
    table's. Runs already in ``out/results.json`` (same table, file and mode) are kept unless run again, so a
    table can be completed model by model, or on several machines (each run records its device)."""
    table = TABLES[choose("table", name, TABLES)]
    labels = [e.label for e in table.entries]
    chosen = labels if not models else [_label(table, m) for m in models]
    path = Path(data) if data else SHARED / table.dataset / "interactions.csv.gz"
    if not path.is_file():
        raise ConfigError(f"{table.name} needs {path} (../shared beside the checkout, or --data FILE)")
    digest = fingerprint(path)
    log_ = _first_users(path, QUICK_USERS) if quick else read_interactions(path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"table": table.name, "paper": table.paper, "protocol": table.protocol_text,
               "data": {"path": str(path), "sha256": digest, "published_file": digest == table.sha256,
                        **log_.summary()},
               "quick": quick, "seqrec_version": __version__, "runs": []}
    previous = out / "results.json"
    if previous.is_file():
        old = json.loads(previous.read_text())
        if (old.get("table"), old.get("data", {}).get("sha256"), old.get("quick")) == (table.name, digest, quick):
            again = {(label, seed) for label in chosen for seed in seeds}
            results["runs"] = [r for r in old["runs"] if (r["label"], r["seed"]) not in again]
    budgets = dict(time_budget or {})
    if digest != table.sha256:
        log.warning("%s is not the paper's file (sha256 %s..., expected %s...): numbers are not comparable",
                    path, digest[:12], table.sha256[:12])
    for seed in seeds:
        split = leave_one_out(log_, valid_users=VALID_USERS, seed=seed)
        test = split.test
        if table.eval_users is not None and len(test) > table.eval_users:
            rows = np.sort(np.random.default_rng(seed).choice(len(test), table.eval_users, replace=False))
            test = test.subset(rows)
        for label in chosen:
            budget = budgets.get(label, budgets.get(None, table.entry(label).budget))
            results["runs"].append(_run_entry(table, table.entry(label), split, test, seed, quick, device,
                                              budget, progress))
            results["runs"].sort(key=lambda r: (labels.index(r["label"]), r["seed"]))
            write_outputs(results, table, out)  # after every model: an interrupted table keeps what it has
    return results


def _label(table: Table, name: str) -> str:
    """A table column from its label or its model name (case-insensitive)."""
    for e in table.entries:
        if name.lower() in (e.label.lower(), e.model):
            return e.label
    raise ConfigError(f"{table.name} has no model {name!r}; choose from {[e.label for e in table.entries]}")


def _first_users(path: Path, n_users: int):
    """The log of the file's first ``n_users`` users (``--quick``)."""
    import pandas as pd

    frame = pd.read_csv(path)
    first = pd.unique(frame["user_id"])[:n_users]
    return read_interactions(frame[frame["user_id"].isin(first)].reset_index(drop=True))


def _run_entry(table: Table, entry: Entry, split, test, seed: int, quick: bool, device: str,
               time_budget: float | None, progress: bool) -> dict:
    from seqrec.models import model_class

    params = dict(entry.params)
    fields = model_class(entry.model).option_fields()
    for key, value in {"seed": seed, "device": device, "progress": progress,
                       "time_budget": time_budget, **(QUICK if quick else {})}.items():
        if key in fields:
            params[key] = value
    model = build(entry.model, params)
    log.info("%s %s (seed %d): training %s", table.name, entry.label, seed, params)
    tick = time.perf_counter()
    model.fit(split.train, valid=split.valid)
    fit_seconds = time.perf_counter() - tick
    n_candidates = table.n_negatives + 1
    result = evaluate(model, test, k=(*table.ks, n_candidates), protocol="sampled",
                      tie_policy=("expected", "optimistic"), n_negatives=table.n_negatives, sampling=table.sampling,
                      replacement=table.replacement, seed=seed)
    sampled = {policy: _pick(metrics, table, "sampled_", n_candidates)
               for policy, metrics in result["by_tie_policy"].items()}
    full = evaluate(model, test, k=(*table.ks, test.log.n_items))
    eval_seconds = time.perf_counter() - tick - fit_seconds
    run = {"label": entry.label, "model": entry.model, "seed": seed, "params": model.get_params(),
           "note": entry.note, "sampled": sampled["expected"], "sampled_optimistic_ties": sampled["optimistic"],
           "full": _pick(full["metrics"], table, "", test.log.n_items),
           "training": training_summary(model, fit_seconds), "fit_seconds": round(fit_seconds, 1),
           "eval_seconds": round(eval_seconds, 1), "n_test_users": len(test), "device": device,
           "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                       "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None},
           "protocol_card": result["protocol"]}
    log.info("%s %s: sampled %s, full %s, %.0f s", table.name, entry.label, run["sampled"], run["full"], fit_seconds)
    return run


def _pick(metrics: dict, table: Table, prefix: str, n_all: int) -> dict:
    """The table's metrics from evaluate's names ("MRR" is MRR@n over the whole candidate list)."""
    return {m: metrics[f"{prefix}MRR@{n_all}"] if m == "MRR" else metrics[f"{prefix}{m}"] for m in table.metrics}


# ---- output --------------------------------------------------------------------------------------------
def summarise(results: dict, table: Table) -> dict:
    """label -> {"sampled"|"sampled_optimistic_ties"|"full": {metric: (mean, std)}, "fit_seconds": mean}."""
    out = {}
    for label in dict.fromkeys(r["label"] for r in results["runs"]):
        runs = [r for r in results["runs"] if r["label"] == label]
        row = {"n_seeds": len(runs), "fit_seconds": float(np.mean([r["fit_seconds"] for r in runs])),
               "devices": sorted({r.get("device", "cpu") for r in runs}),
               "sources": sorted({r["source"] for r in runs if r.get("source")})}
        for kind in ("sampled", "sampled_optimistic_ties", "full"):
            measured = [r[kind] for r in runs if r.get(kind)]  # a run recovered from a log lacks the tie column
            row[kind] = None if len(measured) < len(runs) else {
                m: (float(np.mean([v[m] for v in measured])), float(np.std([v[m] for v in measured])))
                for m in table.metrics}
        out[label] = row
    return out


def _cell(value: tuple, n: int) -> str:
    mean, std = value
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def markdown(results: dict, table: Table) -> str:
    summary = summarise(results, table)
    lines = [f"# {table.name}: {table.paper}", "",
             f"Generated by `seqrec reproduce {table.name}`; do not edit. Protocol: {table.protocol_text}. "
             f"Data: `{results['data']['path']}` (sha256 {results['data']['sha256'][:16]}..., "
             f"{'the published file' if results['data']['published_file'] else 'NOT the published file'}). "
             f"Seeds: {sorted({r['seed'] for r in results['runs']})}"
             f"{' (QUICK smoke run: 1 epoch, first users only)' if results['quick'] else ''}. "
             "The training column is each model's training wall time (validation included) on its device.", ""]
    lines += ["## Sampled protocol (the paper's): published, ours, relative difference", "",
              "| model | " + " | ".join(f"{m} published | {m} ours | Δ" for m in table.metrics)
              + " | training s (device) |",
              "|---|" + "---|---|---|" * len(table.metrics) + "---|"]
    for label, row in summary.items():
        cells = []
        for m in table.metrics:
            pub = table.published.get(label, {}).get(m)
            ours = row["sampled"][m]
            delta = f"{(ours[0] - pub) / pub:+.1%}" if pub else "–"
            cells.append(f"{pub:.4f} | {_cell(ours, row['n_seeds'])} | {delta}" if pub else
                         f"– | {_cell(ours, row['n_seeds'])} | –")
        devices = ", ".join(row["devices"])
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {row['fit_seconds']:.0f} ({devices}) |")
    differ = [label for label, row in summary.items() if row["sampled_optimistic_ties"] is not None and
              any(abs(row["sampled"][m][0] - row["sampled_optimistic_ties"][m][0]) > 5e-5 for m in table.metrics)]
    unmeasured = [label for label, row in summary.items() if row["sampled_optimistic_ties"] is None]
    lines += ["", "## The paper's tie handling (ties broken in the positive's favour)", ""]
    if differ:
        lines += ["| model | " + " | ".join(f"{m} ours (expected) | {m} paper ties" for m in table.metrics) + " |",
                  "|---|" + "---|---|" * len(table.metrics)]
        for label in differ:
            row, n = summary[label], summary[label]["n_seeds"]
            lines.append(f"| {label} | " + " | ".join(
                f"{_cell(row['sampled'][m], n)} | {_cell(row['sampled_optimistic_ties'][m], n)}"
                for m in table.metrics) + " |")
    else:
        lines.append("No model has tied scores that change a metric: both tie policies give the same numbers.")
    if unmeasured:
        lines += ["", f"Not measured for {', '.join(unmeasured)} (runs recovered from a log; continuous scores "
                      "rarely tie)."]
    lines += ["", "## Full ranking (every item a candidate, seen items filtered): the honest protocol", "",
              "| model | " + " | ".join(table.metrics) + " |", "|---|" + "---|" * len(table.metrics)]
    for label, row in summary.items():
        lines.append(f"| {label} | " + " | ".join(_cell(row["full"][m], row["n_seeds"]) for m in table.metrics) + " |")
    key = "HR@10" if "HR@10" in table.metrics else table.metrics[0]
    by_sampled = sorted(summary, key=lambda label: -summary[label]["sampled"][key][0])
    by_full = sorted(summary, key=lambda label: -summary[label]["full"][key][0])
    lines += ["", f"Order by {key}, sampled: {' > '.join(by_sampled)}.",
              f"Order by {key}, full ranking: {' > '.join(by_full)}.",
              "The order CHANGES under full ranking." if by_sampled != by_full else
              "The order is the same under both protocols."]
    notes = [f"- {e.label}: {e.note}" for e in table.entries if e.note and e.label in summary]
    notes += [f"- {label}: recovered from {', '.join(row['sources'])}" for label, row in summary.items()
              if row["sources"]]
    if notes:
        lines += ["", "Settings:", *notes]
    return "\n".join(lines) + "\n"


def chart(results: dict, table: Table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(results, table)
    key = "NDCG@10"
    labels = list(summary)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels)), 4))
    published = [table.published.get(label, {}).get(key, np.nan) for label in labels]
    for offset, values, name in ((-0.27, published, "published (sampled)"),
                                 (0.0, [summary[label]["sampled"][key][0] for label in labels], "ours (sampled)"),
                                 (0.27, [summary[label]["full"][key][0] for label in labels], "ours (full ranking)")):
        ax.bar(x + offset, values, 0.27, label=name)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel(key)
    ax.set_title(f"{table.name}: {key}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(results: dict, table: Table, out: Path) -> None:
    """``results.json``, ``table.md`` and ``chart.png`` in ``out``."""
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "table.md").write_text(markdown(results, table))
    chart(results, table, out / "chart.png")
