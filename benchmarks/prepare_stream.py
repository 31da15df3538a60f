"""Preparing a log of hundreds of millions of events from a directory of Parquet files in bounded memory
(``seqrec.data.stream``); writes benchmarks/results/prepare_stream.json.

    .venv/bin/python -m benchmarks.prepare_stream [--events 100000000] [--files 10] [--keep]

Writes a synthetic log (users uniform, items Zipf-distributed, integer timestamps; the generator of
``benchmarks/prepare_data.py``) as ``--files`` Parquet files in a temporary directory, then prepares it in a
fresh process (so that its peak RSS is the preparation's alone): read in record batches, validate, encode,
order by user and time, 5-core, write memory-mapped arrays; and opens the result memory-mapped and builds
SASRec's training windows from it. Reports seconds and the peak RSS of each process against the target
(≤ 8 GB for 100 M events).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.serve import machine

ROOT = Path(__file__).resolve().parents[1]
TARGET_GB = 8.0

PREPARE = """
import json, resource, sys, time
from seqrec.data.stream import read_parquet_log
tick = time.perf_counter()
log = read_parquet_log(sys.argv[1], min_user_events=5, min_item_events=5, out=sys.argv[2])
print(json.dumps({"seconds": round(time.perf_counter() - tick, 1), "n_events": log.n_events,
                  "n_users": log.n_users, "n_items": log.n_items, "report": log.report,
                  "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}))
"""

WINDOWS = """
import json, resource, sys, time
from seqrec.data.stream import open_prepared
from seqrec.data.batching import NextItemBatcher
tick = time.perf_counter()
log = open_prepared(sys.argv[1])
batcher = NextItemBatcher(log, 50, 128)
print(json.dumps({"seconds": round(time.perf_counter() - tick, 1), "windows": list(batcher.windows.shape),
                  "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}))
"""


def write_log(folder: Path, events: int, files: int, seed: int = 0) -> float:
    """The synthetic log as ``files`` Parquet files, generated a file at a time; returns seconds."""
    tick = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_users, n_items = events // 20, events // 50
    per_file = -(-events // files)
    for k in range(files):
        n = min(per_file, events - k * per_file)
        table = pa.table({"user_id": rng.integers(0, n_users, n),
                          "item_id": (rng.zipf(1.3, n) % n_items).astype(np.int64),
                          "timestamp": rng.integers(1_500_000_000, 1_700_000_000, n)})
        pq.write_table(table, folder / f"part-{k:03d}.parquet")
    return round(time.perf_counter() - tick, 1)


def child(code: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--tmp", help="working directory (default: a temporary one; needs ~5 GB per 100 M events)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder, prepared = Path(tmp) / "log", Path(tmp) / "prepared"
        folder.mkdir()
        written = write_log(folder, args.events, args.files)
        size = sum(p.stat().st_size for p in folder.iterdir())
        print(f"wrote {args.events:,} events in {args.files} files ({size / 2**30:.2f} GiB) in {written} s", flush=True)
        prepare = child(PREPARE, str(folder), str(prepared))
        print(f"prepared in {prepare['seconds']} s, peak RSS {prepare['peak_rss_gb']} GB", flush=True)
        windows = child(WINDOWS, str(prepared))
        print(f"windows {windows['windows']} in {windows['seconds']} s, peak RSS {windows['peak_rss_gb']} GB",
              flush=True)
    result = {"machine": machine(), "events": args.events, "files": args.files, "parquet_gib": round(size / 2**30, 2),
              "write_s": written, "prepare": prepare, "windows": windows, "target_peak_rss_gb": TARGET_GB,
              "met": prepare["peak_rss_gb"] <= TARGET_GB,
              "benchmark_peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    out = ROOT / "benchmarks" / "results" / "prepare_stream.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
