"""Model benchmarks on the shared datasets (leave-one-out): quality (full ranking) and speed, as JSON.

    .venv/bin/python -m benchmarks.run beauty-ce [--epochs N] [--attn-dropout 0] [--bf16] ...
    .venv/bin/python -m benchmarks.run ml100k-bert4rec --bucketing --attn-dropout 0 --set mask_prob=0.2

(Run from the checkout's root; earlier results were written by ``benchmarks/run.py`` and, for SASRec,
``benchmarks/sasrec.py``, this file's earlier names.)

Each run writes benchmarks/results/<name>.json with the resolved configuration, the per-epoch history,
test metrics with and without seen filtering (each with its protocol card), seconds per epoch,
sequences/s, peak RSS, time to the best epoch, the training step's achieved GFLOP/s against this CPU's
matmul ceiling, and the published / peer figures the issue gives for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

import seqrec
from benchmarks.ceiling import matmul_ceiling

ROOT = Path(__file__).resolve().parents[1]
# the shared datasets beside the checkout; SEQREC_DATASETS points elsewhere (e.g. a copy carried to a GPU machine)
DATA = Path(os.environ.get("SEQREC_DATASETS") or ROOT.parent / "shared" / "datasets")

# RecTools' BERT4Rec (rectools/models/nn/transformers/bert4rec.py, defaults): its pre-LN layer, tied dot-product
# head, Xavier init, dropout 0.2 on the item table, mask_prob 0.15 with BERT's 80/10/10 corruption
RECTOOLS_BERT4REC = {"norm": "rectools", "head": "dot", "init": "xavier", "item_dropout": 0.2, "mask_prob": 0.15,
                     "mask_token_share": 0.8}

CONFIGS = {
    "ml100k-ce": {
        "data": "movielens-100k", "params": {"loss": "ce", "max_len": 200, "n_heads": 2},
        "threshold": 0.05,
        "peers": {"RePlay SASRec": {"epoch_s": 5.5, "test_NDCG@10_unfiltered": 0.0568, "time_to_valid_0.05_s": 155},
                  "RecTools SASRec": {"epoch_s": 6.8, "test_NDCG@10_unfiltered": 0.0572,
                                      "test_NDCG@10_seen_filtered": 0.0891, "time_to_valid_0.05_s": 210},
                  "RecBole SASRec": {"epoch_s": 515, "time_to_valid_0.05_s": 585}},
        "targets": {"epoch_s": 2.8, "epoch_s_aim": 1.83, "time_to_valid_0.05_s": 50},
    },
    "beauty-ce": {
        "data": "amazon-beauty-bert4rec", "params": {"loss": "ce", "max_len": 50},
        "published": {"SASRec+ (CE), Dross paper": {"HR@10": 0.0533, "NDCG@10": 0.0327},
                      "RecTools SASRec (CE)": {"HR@10": 0.0595, "NDCG@10": 0.0359}},
        "targets": {"NDCG@10": 0.033, "NDCG@10_aim": 0.036, "epoch_s": 90},
    },
    "beauty-bce": {
        "data": "amazon-beauty-bert4rec", "params": {"loss": "bce", "max_len": 50},
        "published": {"SASRec (BCE)": {"HR@10": 0.0246, "NDCG@10": 0.0126}},
    },
    "ml100k-bert4rec": {
        "model": "bert4rec", "data": "movielens-100k",
        "params": {"loss": "ce", "max_len": 200, "dim": 64, "n_heads": 2, "n_blocks": 2, "batch_size": 128},
        "threshold": 0.05,
        "peers": {"RecTools BERT4Rec": {"epoch_s": 7.7, "best_epoch": 124, "time_to_best_s": 1020,
                                        "test_NDCG@10_seen_filtered": 0.098, "test_NDCG@10_unfiltered": 0.058}},
        "targets": {"epoch_s": 3.85, "NDCG@10": 0.098, "time_to_best_s": 1020},
    },
    "beauty-bert4rec": {
        "model": "bert4rec", "data": "amazon-beauty-bert4rec",
        "params": {"loss": "ce", "max_len": 50, "dim": 64, "n_heads": 2, "n_blocks": 2, "mask_prob": 0.6},
        "published": {"RecTools BERT4Rec": {"HR@10": 0.0434, "NDCG@10": 0.0242},
                      "BERT4Rec, Dross paper": {"HR@10": 0.0338, "NDCG@10": 0.0187}},
        "targets": {"NDCG@10": 0.024},
    },
    "beauty-gru4rec-ce": {
        "model": "gru4rec", "data": "amazon-beauty-bert4rec",
        "params": {"loss": "ce", "batching": "padded", "max_len": 50, "dim": 64, "n_negatives": 0,
                   "optimizer": "adam", "lr": 1e-3, "batch_size": 128},
    },
    "beauty-gru4rec-bprmax": {
        "model": "gru4rec", "data": "amazon-beauty-bert4rec",
        "params": {"loss": "bpr_max", "batching": "padded", "max_len": 50, "dim": 64, "n_negatives": 2048,
                   "sample_alpha": 0.3, "bpreg": 0.9, "elu_alpha": 1.0, "optimizer": "adam", "lr": 1e-3,
                   "batch_size": 128},
    },
    "s3rec-beauty-ce": {
        "data": "amazon-beauty-5core-s3rec", "params": {"loss": "ce", "max_len": 50, "n_heads": 2},
        "published": {"SASRec + sampled softmax": {"HR@10": 0.0921, "NDCG@10": 0.0531}},
        "peers": {"RePlay SASRec": {"epoch_s": 104}, "RecTools SASRec": {"epoch_s": 186}},
        "targets": {"NDCG@10": 0.050, "epoch_s": 30},
    },
}

# the same settings with RecTools' choices (see seqrec.nn.bert4rec): same data, peers and targets
for _base in ("ml100k-bert4rec", "beauty-bert4rec"):
    CONFIGS[f"{_base}-rectools"] = dict(CONFIGS[_base], params={**CONFIGS[_base]["params"], **RECTOOLS_BERT4REC})


def parse_sets(items: list[str]) -> dict:
    """``--set PARAM=VALUE`` options: JSON values (numbers, true/false/null, lists), else plain strings."""
    params = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value  # e.g. norm=pre, loss=top1_max
    return params


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options every benchmark script takes."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="stop training after the first epoch that ends past this wall time (then test)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                        help="any other model parameter, e.g. --set mask_prob=0.6 (repeatable)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--tag", default="", help="suffix of the output file name")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")


def run_and_write(args, run_one, summary_keys: tuple[str, ...], prefix: str = "") -> None:
    """Run each configuration in ``args.configs``, write results/<prefix><name><tag>.json, print a summary."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.configs:
        result = run_one(name, args)
        path = args.out_dir / f"{prefix}{name}{args.tag}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({"name": name, "file": str(path), **{k: result[k] for k in summary_keys}}, indent=2))


def model_params(spec: dict, args) -> dict:
    """The configuration's parameters with the command line's on top (see :func:`leave_one_out_parser`)."""
    params = dict(spec["params"], epochs=args.epochs, patience=args.patience, seed=args.seed,
                  device=args.device, progress=not args.quiet)
    if args.time_budget is not None:
        params["time_budget"] = args.time_budget
    for name in ("dropout", "attn_dropout", "lr", "n_heads", "bf16", "bucketing"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    params.update(parse_sets(args.set))
    return params


def run(name: str, args) -> dict:
    spec = CONFIGS[name]
    log = seqrec.read_interactions(DATA / spec["data"] / "interactions.csv.gz")
    split = seqrec.leave_one_out(log, valid_users=args.valid_users, seed=args.seed)
    train, valid, test = split
    model = seqrec.build(spec.get("model", "sasrec"), model_params(spec, args))
    refit = None
    if args.refit_epochs:  # the epochs were chosen by an earlier selection run with the same settings
        model.epochs = args.refit_epochs
        model.fit(split.train_valid)
        refit = {"on": "train+valid", "epochs": args.refit_epochs, "selection": "given by --refit-epochs"}
    else:
        model.fit(train, valid=valid)
        if args.refit:
            selected = model
            model = selected.refit(split.train_valid)
            refit = {"on": "train+valid", "epochs": selected.train_result_.best_epoch,
                     "selection": {**model.refit_of_,
                                   "wall_s": round(selected.train_result_.epochs[-1].elapsed, 1),
                                   "test_seen_filtered": seqrec.evaluate(selected, test, k=(10, 20))["metrics"],
                                   "history": _history(selected.train_result_.epochs)}}
    if refit is not None:
        refit["n_train_valid_events"] = int(split.train_valid_lengths.sum())
    history = model.train_result_.epochs
    best = model.train_result_.best_epoch
    epoch_seconds = [r.seconds for r in history]
    body_flops, head_flops = model.training_flops(train if refit is None else split.train_valid)
    flops = body_flops + head_flops
    precision = "bf16" if args.bf16 else "fp32"
    ceiling = matmul_ceiling(precision) if args.device == "cpu" else None  # measured on this CPU, now
    threshold = spec.get("threshold")
    reached = next((r.elapsed for r in history if threshold and r.valid.get("NDCG@10", 0) >= threshold), None)
    tick = time.perf_counter()
    filtered = seqrec.evaluate(model, test, k=(10, 20), split=split.card())
    eval_seconds = time.perf_counter() - tick
    unfiltered = seqrec.evaluate(model, test, k=(10, 20), exclude_seen=False, split=split.card())
    median_epoch = statistics.median(epoch_seconds)
    result = {
        "name": name,
        "model": model.name,
        "command": " ".join(sys.argv),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch_threads": torch.get_num_threads(), "device": args.device, "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else None},
        "dataset": log.summary(),
        "split": split.card(),
        "params": model.get_params(),
        "train": {
            "epochs_run": len(history), "best_epoch": best, "stop_reason": model.train_result_.stop_reason,
            "seconds_per_epoch_median": round(median_epoch, 2),
            "seconds_per_epoch_mean": round(statistics.mean(epoch_seconds), 2),
            "sequences_per_s": round(statistics.median(r.sequences_per_s for r in history), 1),
            "valid_seconds_per_epoch": round(statistics.mean(r.valid_seconds for r in history), 2),
            "time_to_best_epoch_s": round(history[best - 1].elapsed, 1),
            "total_wall_s": round(history[-1].elapsed, 1),
            f"time_to_valid_NDCG@10_{threshold}_s": round(reached, 1) if reached else None,
            "model_gflop_per_epoch": round(flops / 1e9, 1),
            "network_gflop_per_epoch": round(body_flops / 1e9, 1),
            "output_layer_gflop_per_epoch": round(head_flops / 1e9, 1),
            "achieved_gflops": round(flops / 1e9 / median_epoch, 1),
            "ceiling_gflops": ceiling, "precision": precision,
            "fraction_of_ceiling": None if ceiling is None else round(flops / 1e9 / median_epoch / ceiling, 3),
        },
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "test_seen_filtered": filtered["metrics"],
        "test_unfiltered": unfiltered["metrics"],
        "eval_seconds_full_ranking": round(eval_seconds, 2),
        "protocol": filtered["protocol"],
        "published": spec.get("published", {}),
        "peers_on_this_machine": spec.get("peers", {}),
        "targets": spec.get("targets", {}),
        "history": _history(history),
    }
    if refit is not None:  # the model measured above is the refit; "train" describes its training
        result["refit"] = refit
    if "epoch_s" in result["targets"]:
        result["speed_vs_target"] = {"epoch_s": round(median_epoch, 2), "target": result["targets"]["epoch_s"]}
    return result


def _history(history) -> list[dict]:
    return [{"epoch": r.epoch, "loss": round(r.loss, 4), "seconds": round(r.seconds, 2),
             "elapsed": round(r.elapsed, 1), **{k: round(v, 4) for k, v in r.valid.items()}} for r in history]


def leave_one_out_parser(description: str) -> argparse.ArgumentParser:
    """Options of the scripts that train a :data:`CONFIGS` entry under leave-one-out."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", choices=sorted(CONFIGS))
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--dropout", type=float, default=None)
    parser.add_argument("--attn-dropout", type=float, default=None)
    parser.add_argument("--n-heads", type=int, default=None)
    parser.add_argument("--valid-users", type=int, default=None)
    parser.add_argument("--bf16", action="store_true", default=None)
    parser.add_argument("--bucketing", action="store_true", default=None,
                        help="length-bucketed batches (faster, see SASRec doc)")
    refit = parser.add_mutually_exclusive_group()
    refit.add_argument("--refit", action="store_true",
                       help="after early stopping, retrain on train + validation for the best epoch count and "
                            "test that model (the selection run's test figures are kept under 'refit')")
    refit.add_argument("--refit-epochs", type=int, default=None, metavar="N",
                       help="skip selection: train on train + validation for N epochs (chosen by an earlier run)")
    add_common_options(parser)
    return parser


def main() -> None:
    args = leave_one_out_parser(__doc__).parse_args()
    run_and_write(args, run, ("train", "test_seen_filtered", "test_unfiltered"))


if __name__ == "__main__":
    main()
