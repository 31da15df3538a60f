"""``seqrec tune`` on the shared datasets: what a budgeted search gains over the defaults, as JSON.

    .venv/bin/python -m benchmarks.tune s3rec-sasrec --budget 2h
    .venv/bin/python -m benchmarks.tune beauty-sasrec --budget 2h

(Run from the checkout's root.) Each run searches with the model's generic space (the same for every
dataset), writes its run directory to ``runs/tune-<name>`` (the study and the report in ``tune/``, so an
interrupted run resumes) and ``benchmarks/results/tune-<name>.json``: the budget and the time spent, the
trials, the defaults' and the tuned model's validation and test figures, the overfit and validation–test
gaps, the importances, and the issue's target.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sys

import torch

from benchmarks.run import DATA, ROOT
from seqrec.tuning import PRUNE_STARTUP_TRIALS, TuneConfig, parse_duration, tune_run

CONFIGS = {
    "s3rec-sasrec": {"data": "amazon-beauty-5core-s3rec", "model": "sasrec", "target": 0.058,
                     "published": {"SASRec, careful re-evaluation": 0.0531, "highest claimed": 0.0611}},
    "beauty-sasrec": {"data": "amazon-beauty-bert4rec", "model": "sasrec", "target": 0.040,
                      "published": {"RecTools SASRec (CE)": 0.0359, "SASRec+ (CE), Dross paper": 0.0327}},
    "beauty-bert4rec": {"data": "amazon-beauty-bert4rec", "model": "bert4rec", "target": None,
                        "published": {"RecTools BERT4Rec": 0.0242}},
    "ml100k-sasrec": {"data": "movielens-100k", "model": "sasrec", "target": None,
                      "published": {"RecTools SASRec (seen filtered)": 0.0891}},
}
FIXED = {"patience": 5}  # every dataset alike: a trial stops 5 epochs after its best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=CONFIGS)
    parser.add_argument("--budget", default="2h")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--tag", default="", help="suffix of the result's name (start it with a dash)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="seqrec: %(message)s", stream=sys.stderr)
    spec = CONFIGS[args.name]
    name = f"tune-{args.name}{args.tag}"
    out = ROOT / "runs" / name
    config = TuneConfig(data=str(DATA / spec["data"] / "interactions.csv.gz"), model=spec["model"], out=str(out),
                        budget=args.budget, seeds=args.seeds)
    report = tune_run(config, dict(FIXED))
    metric = report["metric"]
    tuned = report["refit"]["mean"][metric] if "refit" in report else report["test"][metric]
    result = {
        "name": name, "command": " ".join(["benchmarks/tune.py", *(argv or sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()},
        "model": spec["model"], "data": report["data"], "split": report["split"], "fixed": FIXED,
        "budget_s": parse_duration(args.budget), "spent_s": report["spent_seconds"],
        "pruner": {"percentile": config.prune_percentile, "from_epoch": config.prune_after,
                   "after_finished_trials": PRUNE_STARTUP_TRIALS},
        "trials": report["n_trials"], "best_trial": report["best_trial"], "params": report["params"],
        "defaults": {"valid": (report.get("defaults_trial") or {}).get("value"),
                     "test": report.get("defaults_test", {})},
        "selection": {"valid": report["selection_valid"], "test": report["selection_test"]},
        "refit": report.get("refit"), "tuned_test_" + metric: tuned,
        "valid_test_gap": report["valid_test_gap"], "overfit_check": report.get("overfit_check"),
        "importance": report["importance"], "published": spec["published"], "target": spec["target"],
        "target_met": None if spec["target"] is None else tuned >= spec["target"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "report": str(out.relative_to(ROOT) / "tune" / "report.md"),
    }
    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("name", "spent_s", "trials", "defaults", f"tuned_test_{metric}",
                                             "target_met")}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
