"""Same seed, same numbers: train a fixed set of short configurations through the public API and write their
test metrics, per-epoch losses, validation metrics and epoch seconds, so that two checkouts can be compared
after a change that must not alter behaviour.

    .venv/bin/python -m benchmarks.same_seed OUT.json [CASE ...]     # on each checkout
    .venv/bin/python -m benchmarks.same_seed --compare BEFORE.json AFTER.json

Leave-one-out with 2,000 validation users, seed 0, a few epochs each; the data are the shared datasets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import seqrec
from benchmarks.run import DATA

CASES = {
    "ml100k-ce": ("sasrec", "movielens-100k", dict(loss="ce", max_len=200, n_heads=2, epochs=3)),
    "ml100k-bce": ("sasrec", "movielens-100k", dict(loss="bce", max_len=200, n_heads=2, epochs=2)),
    "ml100k-sampled": ("sasrec", "movielens-100k", dict(loss="sampled_ce", max_len=200, n_heads=2, epochs=2,
                                                        bucketing=True)),
    "s3rec-beauty-ce": ("sasrec", "amazon-beauty-5core-s3rec", dict(loss="ce", max_len=50, n_heads=2, epochs=2)),
    "ml100k-bert4rec": ("bert4rec", "movielens-100k", dict(loss="ce", max_len=200, epochs=3, bucketing=True)),
    "ml100k-bert4rec-rectools": ("bert4rec", "movielens-100k", dict(
        loss="ce", max_len=200, epochs=2, norm="rectools", head="dot", init="xavier", item_dropout=0.2,
        mask_prob=0.15, mask_token_share=0.8, sliding_window=0.5)),
    "ml100k-bert4rec-sampled": ("bert4rec", "movielens-100k", dict(loss="sampled_ce", max_len=200, epochs=2,
                                                                   weight_decay=0.01)),
    "ml100k-gru4rec-session": ("gru4rec", "movielens-100k", dict(loss="ce", epochs=2, logq=1.0)),
    "ml100k-gru4rec-plus": ("gru4rec+", "movielens-100k", dict(epochs=2)),
    "ml100k-gru4rec-padded-ce": ("gru4rec", "movielens-100k", dict(
        loss="ce", batching="padded", n_negatives=0, optimizer="adam", lr=1e-3, batch_size=128, dim=64, epochs=2)),
    "ml100k-gru4rec-padded-bprmax": ("gru4rec", "movielens-100k", dict(
        loss="bpr_max", batching="padded", n_negatives=512, batch_size=128, dim=64, epochs=2, embed_dropout=0.2,
        hidden_dropout=0.1, input_dim=32, n_blocks=2)),
}


def run(names: list[str], out: str) -> None:
    results = {}
    for name in names:
        model_name, data, params = CASES[name]
        log = seqrec.read_interactions(DATA / data / "interactions.csv.gz")
        split = seqrec.leave_one_out(log, valid_users=2000, seed=0)
        model = seqrec.build(model_name, dict(params, seed=0, progress=False))
        tick = time.perf_counter()
        model.fit(split.train, valid=split.valid)
        epochs = model.train_result_.epochs
        results[name] = {"test": seqrec.evaluate(model, split.test, k=(10,))["metrics"],
                         "losses": [r.loss for r in epochs], "valid": [r.valid.get("NDCG@10") for r in epochs],
                         "epoch_s": [round(r.seconds, 2) for r in epochs], "wall": round(time.perf_counter() - tick, 1)}
        print(name, json.dumps(results[name]), flush=True)
        with open(out, "w") as file:
            json.dump(results, file, indent=1)


def compare(before: str, after: str) -> None:
    a, b = json.load(open(before)), json.load(open(after))
    print("| case | test NDCG@10 before | after | identical metrics | validation identical | max loss diff "
          "| median epoch s before | after |\n|---|---|---|---|---|---|---|---|")
    for name in [n for n in a if n in b]:
        x, y = a[name], b[name]
        loss = max(abs(p - q) for p, q in zip(x["losses"], y["losses"]))
        print(f"| {name} | {x['test']['NDCG@10']:.6f} | {y['test']['NDCG@10']:.6f} | {x['test'] == y['test']} "
              f"| {x['valid'] == y['valid']} | {loss:.1e} | {statistics.median(x['epoch_s']):.2f} "
              f"| {statistics.median(y['epoch_s']):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", help="the JSON file to write")
    parser.add_argument("cases", nargs="*", choices=[[]] + sorted(CASES), default=[])
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
    elif args.out:
        run(args.cases or list(CASES), args.out)
    else:
        parser.error("give OUT.json, or --compare BEFORE.json AFTER.json")


if __name__ == "__main__":
    main()
