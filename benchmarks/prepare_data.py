"""Data preparation speed on a synthetic 10-million-row log; writes benchmarks/results/prepare_data.json.

    .venv/bin/python benchmarks/prepare_data.py [--rows 10000000]

Times each stage the library runs on the log (validation, encoding + stable ordering, iterative 5-core,
leave-one-out split) from a DataFrame and from a Parquet file, with integer and with string ids.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import seqrec

ROOT = Path(__file__).resolve().parents[1]


def synthetic(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_users, n_items = rows // 20, rows // 50
    users = rng.integers(0, n_users, rows)
    items = (rng.zipf(1.3, rows) % n_items).astype(np.int64)  # long-tailed popularity
    times = rng.integers(1_500_000_000, 1_700_000_000, rows)
    return pd.DataFrame({"user_id": users, "item_id": items, "timestamp": times})


def timed(fn):
    tick = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - tick, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    frame = synthetic(args.rows)
    results = {"rows": args.rows}
    log, results["dataframe_int_ids_s"] = timed(lambda: seqrec.read_interactions(frame))
    _, results["dataframe_int_ids_5core_s"] = timed(
        lambda: seqrec.read_interactions(frame, min_user_events=5, min_item_events=5))
    _, results["leave_one_out_s"] = timed(lambda: seqrec.leave_one_out(log))
    _, results["temporal_split_s"] = timed(lambda: seqrec.temporal_split(log, 0.9))
    strings = frame.assign(user_id="u" + frame["user_id"].astype(str), item_id="i" + frame["item_id"].astype(str))
    _, results["dataframe_string_ids_s"] = timed(lambda: seqrec.read_interactions(strings))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.parquet"
        frame.to_parquet(path, index=False)
        _, results["parquet_int_ids_s"] = timed(lambda: seqrec.read_interactions(path))
    results.update(n_users=log.n_users, n_items=log.n_items,
                   peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    out = ROOT / "benchmarks" / "results" / "prepare_data.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
