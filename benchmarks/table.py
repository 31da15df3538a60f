"""Render benchmarks/results/*.json as the Markdown table used in the README.

    .venv/bin/python benchmarks/table.py
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    rows = ["| run | loss, dropout / attention dropout | epochs (best) | s/epoch | GFLOP/s (of ceiling) | time to best | test HR@10 | test NDCG@10 "
            "| NDCG@10, no seen filter | published / peers |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        r = json.loads(path.read_text())
        if "train" not in r:
            continue
        t, p = r["train"], r["params"]
        ref = "; ".join(f"{name} {v.get('NDCG@10', v.get('test_NDCG@10_seen_filtered', ''))}".strip()
                        for name, v in {**r.get("published", {}), **r.get("peers_on_this_machine", {})}.items()
                        if v.get("NDCG@10") or v.get("test_NDCG@10_seen_filtered"))
        rows.append(
            f"| {path.stem} | {p['loss']}{' bf16' if p.get('bf16') else ''}{' bucketed' if p.get('bucketing') else ''}, "
            f"{p['dropout']} / "
            f"{p['dropout'] if p['attn_dropout'] is None else p['attn_dropout']} | {t['epochs_run']} ({t['best_epoch']}) "
            f"| {t['seconds_per_epoch_median']} | {t['achieved_gflops']} ({t['fraction_of_ceiling']:.0%}) "
            f"| {t['time_to_best_epoch_s']:.0f} s | {r['test_seen_filtered']['HR@10']:.4f} "
            f"| {r['test_seen_filtered']['NDCG@10']:.4f} | {r['test_unfiltered']['NDCG@10']:.4f} | {ref} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
