"""Session-based benchmark (GRU4Rec protocol): train on earlier sessions, predict every next event of the
last sessions; Recall@20 and MRR@20 over the full catalogue, no seen filtering; throughput in events/s and
where a training step's time goes. Writes benchmarks/results/<name>.json.

    .venv/bin/python -m benchmarks.sessions diginetica-gru4rec [--epochs 10] [--set dim=512 ...]

The session split carries its protocol: seen items stay in the ranking and only items with a training event
are candidates (results before that change ranked every item of the catalogue).
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time

import torch

import seqrec
from benchmarks.run import DATA, add_common_options, parse_sets, run_and_write
from seqrec.train import Callback

CONFIGS = {
    # the official code's defaults (one layer of 100, CE, batch 64, 2048 negatives, alpha 0.5, Adagrad)
    "diginetica-gru4rec": {"model": "gru4rec", "data": "diginetica-sessions-dynamicrec", "params": {}},
    # GRU4Rec+ preset: the official tuned Diginetica BPR-max parameters except dim (512 there)
    "diginetica-gru4rec-plus": {"model": "gru4rec+", "data": "diginetica-sessions-dynamicrec", "params": {}},
    # the official tuned Diginetica parameters in full (dim 512)
    "diginetica-gru4rec-plus-512": {"model": "gru4rec+", "data": "diginetica-sessions-dynamicrec",
                                    "params": {"dim": 512}},
    "diginetica-sasrec": {"model": "sasrec", "data": "diginetica-sessions-dynamicrec",
                          "params": {"loss": "ce", "max_len": 50, "n_heads": 2, "attn_dropout": 0.0,
                                     "bucketing": True}},
}
REFERENCE = {"official GRU4Rec on an A30 GPU (Hidasi & Czapp, RecSys 2023)": {"events_per_s": "80k-200k"}}


class StepTimer(Callback):
    """Seconds spent in each phase of ``n_steps`` training steps after ``warmup`` steps, then stops training.
    On a GPU each phase waits for its kernels, so the split is true (the total is then slightly above a
    free-running step's)."""

    PHASES = ("batching", "forward_and_loss", "backward", "optimizer")

    def __init__(self, device: str, n_steps: int = 200, warmup: int = 20):
        self.cuda, self.device, self.n_steps, self.warmup = device.startswith("cuda"), device, n_steps, warmup
        self.phases, self.events, self.steps, self.last = dict.fromkeys(self.PHASES, 0.0), 0, 0, None

    def _clock(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _add(self, phase: str) -> None:
        now = self._clock()
        if self.last is not None and self.steps >= self.warmup:
            self.phases[phase] += now - self.last
        self.last = now

    def on_batch(self, batch):
        self._add("batching")
        if self.steps >= self.warmup:
            self.events += batch.n_sequences

    def on_loss(self, loss):
        self._add("forward_and_loss")

    def on_backward(self):
        self._add("backward")

    def on_step(self, step):
        self._add("optimizer")
        self.steps += 1
        return self.steps >= self.warmup + self.n_steps

    def result(self) -> dict:
        total = sum(self.phases.values())
        measured = self.steps - self.warmup
        return {"steps": measured, "ms_per_step": round(1000 * total / max(measured, 1), 2),
                "events_per_s": round(self.events / total, 1) if total else None,
                "share": {k: round(v / total, 3) for k, v in self.phases.items()} if total else {}}


def step_profile(model, train, n_steps: int = 200) -> dict:
    """Where a training step's time goes (:class:`StepTimer` over one shortened epoch of ``model``)."""
    timer = StepTimer(model.device, n_steps)
    model.clone().set_params(epochs=1, progress=False).fit(train, callbacks=[timer])
    return timer.result()


def run(name: str, args) -> dict:
    spec = CONFIGS[name]
    log = seqrec.read_interactions(DATA / spec["data"] / "interactions.csv.gz")
    split = seqrec.session_split(log, test_fraction=args.test_fraction)
    train, valid, test = split
    params = dict(spec["params"], seed=args.seed, device=args.device, progress=not args.quiet)
    if args.time_budget is not None:
        params["time_budget"] = args.time_budget
    if args.epochs is not None:
        params["epochs"] = args.epochs
    if args.patience is not None:
        params["patience"] = args.patience
    params.update(parse_sets(args.set))
    model = seqrec.build(spec["model"], params)
    profile = step_profile(model, train) if spec["model"].startswith("gru4rec") else None
    valid_rows = valid.subset(torch.randperm(len(valid), generator=torch.Generator().manual_seed(0))
                              [:args.valid_events].sort().values.numpy()) if args.valid_events else valid
    model.fit(train, valid=valid_rows)  # validated as tested: the split carries its protocol
    history = model.train_result_.epochs
    best = model.train_result_.best_epoch
    tick = time.perf_counter()
    result = seqrec.evaluate(model, test, k=(20,), split=split.card())
    eval_seconds = time.perf_counter() - tick
    n_events = int(train.lengths[train.lengths >= 2].sum() - (train.lengths >= 2).sum())  # (input, target) pairs
    return {
        "name": name, "model": model.name, "command": " ".join(sys.argv),
        "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads(), "device": args.device,
                    "gpu": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else None},
        "dataset": log.summary(), "split": split.card(), "params": model.get_params(),
        "train": {
            "epochs_run": len(history), "best_epoch": best, "stop_reason": model.train_result_.stop_reason,
            "seconds_per_epoch_median": round(statistics.median(r.seconds for r in history), 2),
            "training_pairs_per_epoch": n_events,
            "events_per_s": round(n_events / statistics.median(r.seconds for r in history), 1),
            "time_to_best_epoch_s": round(history[best - 1].elapsed, 1),
            "total_wall_s": round(history[-1].elapsed, 1),
            "valid_events": len(valid_rows),
        },
        "step_profile": profile,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "test": {"Recall@20": result["metrics"]["HR@20"], "MRR@20": result["metrics"]["MRR@20"],
                 "NDCG@20": result["metrics"]["NDCG@20"]},
        "eval_seconds": round(eval_seconds, 2), "protocol": result["protocol"], "reference": REFERENCE,
        "history": [{"epoch": r.epoch, "loss": round(r.loss, 4), "seconds": round(r.seconds, 2),
                     "elapsed": round(r.elapsed, 1), **{k: round(v, 4) for k, v in r.valid.items()}}
                    for r in history],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", choices=sorted(CONFIGS))
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--valid-events", type=int, default=10000, help="validation rows used for early stopping")
    add_common_options(parser)
    run_and_write(parser.parse_args(), run, ("train", "test", "step_profile"))


if __name__ == "__main__":
    main()
