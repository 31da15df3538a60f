"""Data-parallel training speed on this machine: the same run with 1 process (all cores) and with N
processes (``seqrec train --devices N``, torchrun + Gloo, one thread each); writes
benchmarks/results/distributed.json.

    .venv/bin/python -m benchmarks.distributed [--configs ml100k-ce,beauty-ce] [--epochs 3] [--devices 2]

Each run trains ``--epochs`` epochs (no early stop) with the configuration of ``benchmarks/run.py``; the
figures are the median seconds of a training epoch (validation excluded) and the per-epoch loss of both runs
(the same global batch: the curves should agree to float-reduction order).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.run import CONFIGS, DATA, ROOT
from benchmarks.serve import machine


def train(config: dict, epochs: int, devices: int, out: Path) -> dict:
    params = [f"--{k.replace('_', '-')}={v}" for k, v in config["params"].items()]
    command = [sys.executable, "-m", "seqrec", "train", "--data", str(DATA / config["data"] / "interactions.csv.gz"),
               "--out", str(out), "--epochs", str(epochs), "--patience", str(epochs), "--no-progress",
               "--devices", str(devices), *params]
    tick = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - tick
    history = json.loads((out / "training.json").read_text())["epochs"]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    return {"devices": devices, "command": " ".join(command[1:]), "wall_s": round(wall, 1),
            "epoch_s": [round(e["seconds"], 2) for e in history],
            "median_epoch_s": round(statistics.median(e["seconds"] for e in history), 2),
            "loss": [round(e["loss"], 6) for e in history],
            "valid_NDCG@10": [round(e["valid"].get("NDCG@10", float("nan")), 5) for e in history],
            "test_NDCG@10": round(metrics["NDCG@10"], 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="ml100k-ce,beauty-ce")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--devices", type=int, default=2)
    args = parser.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            config = CONFIGS[name]
            single = train(config, args.epochs, 1, Path(tmp) / f"{name}-1")
            parallel = train(config, args.epochs, args.devices, Path(tmp) / f"{name}-{args.devices}")
            runs[name] = {"data": config["data"], "params": config["params"], "single": single,
                          "parallel": parallel,
                          "speedup": round(single["median_epoch_s"] / parallel["median_epoch_s"], 2)}
            print(f"{name}: 1 process {single['median_epoch_s']} s/epoch, {args.devices} processes "
                  f"{parallel['median_epoch_s']} s/epoch ({runs[name]['speedup']}x)", flush=True)
    result = {"machine": machine(), "epochs": args.epochs, "devices": args.devices, "runs": runs}
    path = ROOT / "benchmarks" / "results" / "distributed.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
