"""Add the runs a ``seqrec reproduce`` log reports to a table's results.json, for a run whose results.json
was lost (a GPU lease that ended before the table was copied back). Each line

    seqrec: TABLE LABEL (seed S): training {...}
    seqrec: TABLE LABEL: sampled {...}, full {...}, N s

gives one run, marked ``"source": "log: FILE"``; what a log does not hold (the paper's tie handling, the
protocol card) is left out and the generated table says so.

    .venv/bin/python -m benchmarks.reproduce_log LOG --device cuda --out reproduce/bert4rec-table [--labels BERT4Rec]
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path

from seqrec import reproduce

TRAINING = re.compile(r"seqrec: (\S+) (.+) \(seed (\d+)\): training (\{.*\})$")
RESULT = re.compile(r"seqrec: (\S+) (.+): sampled (\{.*\}), full (\{.*\}), ([\d.]+) s$")
STOP = re.compile(r"best epoch (\d+)")


def runs_from_log(path: Path, device: str, labels: list[str] | None = None) -> tuple[str, list[dict]]:
    table, runs, current = None, [], None
    for line in path.read_text().splitlines():
        if match := TRAINING.match(line):
            table, label, seed, params = match[1], match[2], int(match[3]), ast.literal_eval(match[4])
            current = {"label": label, "seed": seed, "params": params, "best_epoch": None}
        elif (match := STOP.search(line)) and current is not None:
            current["best_epoch"] = int(match[1])
        elif (match := RESULT.match(line)) and current is not None and match[2] == current["label"]:
            if labels and current["label"] not in labels:
                continue
            entry = reproduce.TABLES[table].entry(current["label"])
            runs.append({"label": current["label"], "model": entry.model, "seed": current["seed"],
                         "params": current["params"], "note": entry.note,
                         "sampled": ast.literal_eval(match[3]), "full": ast.literal_eval(match[4]),
                         "training": {"best_epoch": current["best_epoch"]}, "fit_seconds": float(match[5]),
                         "device": device, "source": f"log: {path.name}"})
            current = None
    return table, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path)
    parser.add_argument("--device", required=True)
    parser.add_argument("--out", type=Path, required=True, help="the table's folder (holding results.json)")
    parser.add_argument("--labels", help="comma-separated labels to take (default: all in the log)")
    args = parser.parse_args()
    name, runs = runs_from_log(args.log, args.device, args.labels.split(",") if args.labels else None)
    results = json.loads((args.out / "results.json").read_text())
    if results["table"] != name:
        raise SystemExit(f"{args.log} reports {name}, {args.out} holds {results['table']}")
    taken = {(r["label"], r["seed"]) for r in runs}
    results["runs"] = [r for r in results["runs"] if (r["label"], r["seed"]) not in taken] + runs
    table = reproduce.TABLES[name]
    order = [e.label for e in table.entries]
    results["runs"].sort(key=lambda r: (order.index(r["label"]), r["seed"]))
    reproduce.write_outputs(results, table, args.out)
    print(f"added {[r['label'] for r in runs]} to {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
