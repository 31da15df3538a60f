"""The sequentiality audit (``seqrec analyze``) on the shared files the paper's table covers, beside its figures.

    .venv/bin/python -m benchmarks.audit beauty games diginetica      # all three (the default)
    .venv/bin/python -m benchmarks.audit beauty --time-budget 600     # more training per model

Writes ``benchmarks/results/audit-NAME[SUFFIX].json`` (our summary, the paper's figures, seconds per part, machine)
and the full report to ``docs/audits/NAME/`` (report.md, plots, audit.json, summary.json; ``--report-dir``
elsewhere). Paper: Klenitskiy et al., "Does It Look Sequential? An Analysis of Datasets for Evaluation of
Sequential Recommendations", RecSys 2024, Table 3 (relative change after shuffling; * = significant).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

import seqrec
from benchmarks.run import DATA, ROOT  # the shared datasets (or SEQREC_DATASETS), the checkout
from benchmarks.table import RESULTS

REPORTS = ROOT / "docs" / "audits"

# the paper's table: rules relative change (2-gram, 3-gram), per model HR@10 / NDCG@10 change and Jaccard@10
AUDITS = {
    "beauty": {"data": "amazon-beauty-bert4rec", "paper": {
        "dataset": "Amazon Beauty (raw ratings, their 5-core)", "sequential": True,
        "rules": {"2-gram": -0.97, "3-gram": -1.00},
        "sasrec": {"HR@10": -0.39, "NDCG@10": -0.43, "jaccard@10": 0.24, "significant": True},
        "gru4rec": {"HR@10": -0.25, "NDCG@10": -0.26, "jaccard@10": 0.23, "significant": True}}},
    "games": {"data": "amazon-video-games-sasrec", "paper": {
        "dataset": "Amazon Video Games (raw ratings, their 5-core)", "sequential": True,
        "rules": {"2-gram": -0.92, "3-gram": -0.98},
        "sasrec": {"HR@10": -0.33, "NDCG@10": -0.38, "jaccard@10": 0.22, "significant": True},
        "gru4rec": {"HR@10": -0.17, "NDCG@10": -0.17, "jaccard@10": 0.22, "significant": True}}},
    "diginetica": {"data": "diginetica-sessions-dynamicrec", "paper": {
        "dataset": "Diginetica item views (sessions as users, their 5-core)", "sequential": False,
        "rules": {"2-gram": -0.74, "3-gram": -0.92},
        "sasrec": {"HR@10": -0.14, "NDCG@10": -0.07, "jaccard@10": 0.52, "significant": False},
        "gru4rec": {"HR@10": -0.17, "NDCG@10": -0.16, "jaccard@10": 0.44, "significant": False}}},
}


def run(name: str, args) -> dict:
    spec = AUDITS[name]
    path = Path(os.path.relpath(DATA / spec["data"] / "interactions.csv.gz"))  # the report names it so
    overrides = {"time_budget": args.time_budget, "seed": args.seed, "device": args.device}
    if args.models:
        overrides["models"] = args.models.split(",")
    started = time.perf_counter()
    audit = seqrec.analyze(path, **overrides)
    total = time.perf_counter() - started
    label = name + args.suffix
    report_dir = Path(args.report_dir or REPORTS) / label
    audit.write(report_dir)
    result = {
        "name": label, "command": " ".join(sys.argv), "data": spec["data"], "summary": audit.summary(),
        "statistics": {k: audit.stats[k] for k in ("users", "items", "events")},
        "training": {m["model"]: m["training"] for m in audit.models},
        "seconds": {**audit.seconds, "total": total}, "paper": spec["paper"],
        "report": str(report_dir.relative_to(ROOT)) if report_dir.is_relative_to(ROOT) else str(report_dir),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch_threads": torch.get_num_threads(), "device": args.device, "torch": torch.__version__,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"audit-{label}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"{label}: {audit.verdict['verdict']} in {total:.0f} s; {audit.verdict['reason']}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"datasets ({', '.join(AUDITS)}; default: all)")
    parser.add_argument("--time-budget", type=float, default=300.0, help="seconds of training per model")
    parser.add_argument("--models", help="comma-separated (default: sasrec,gru4rec; 'none' skips them)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--report-dir", help="where the reports go (default: docs/audits)")
    parser.add_argument("--suffix", default="",
                        help="added to the result's and the report's name (e.g. --suffix=-900s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    unknown = sorted(set(args.names) - set(AUDITS))
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; choose from {list(AUDITS)}")
    for name in args.names or list(AUDITS):
        run(name, args)


if __name__ == "__main__":
    main()
