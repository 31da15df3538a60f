"""Render benchmarks/results/*.json as benchmarks/RESULTS.md (generated: never edit it by hand).

    .venv/bin/python -m benchmarks.table            # write benchmarks/RESULTS.md
    .venv/bin/python -m benchmarks.table --print    # print it instead
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import seqrec
from seqrec import losses

RESULTS = Path(__file__).resolve().parent / "results"


BOOKKEEPING = {"loss", "epochs", "patience", "seed", "device", "progress", "time_budget"}
RENAMED = {"n_layers": "n_blocks", "embedding": "input_dim", "dropout_embed": "embed_dropout",
           "dropout_hidden": "hidden_dropout", "elu": "elu_alpha"}  # names of results written before the rename


def _setting(p: dict, model: str) -> str:
    """The loss and every option of the run that differs from the model's declared default, in a few words
    (so an option added to a model shows here without touching this file)."""
    defaults = seqrec.MODELS[model]().get_params() if model in seqrec.MODELS else {}
    uses_negatives = model.startswith("gru4rec") or losses.LOSSES[p["loss"]].negatives == "sampled"
    parts = [p["loss"]]
    for old, value in p.items():
        name = RENAMED.get(old, old)
        if old == "embedding" and value == 0:
            value = None  # 0 meant the tied table
        if name in BOOKKEEPING or (name in defaults and value == defaults[name]) or value is None:
            continue
        if name == "n_negatives" and not uses_negatives:
            continue
        parts.append(name if value is True else f"{name} {value}")
    return ", ".join(parts)


def leave_one_out_table() -> list[str]:
    rows = ["| run | model | setting | threads | epochs (best) | s/epoch | GFLOP/s (of ceiling) | time to best "
            "| test HR@10 | test NDCG@10 | NDCG@10, no seen filter | published / peers |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        r = json.loads(path.read_text())
        if "test_seen_filtered" not in r:
            continue
        t, p = r["train"], r["params"]
        model = r.get("model") or ("gru4rec" if "batching" in p else "bert4rec" if "mask_prob" in p else "sasrec")
        ref = "; ".join(f"{name} {v.get('NDCG@10', v.get('test_NDCG@10_seen_filtered', ''))}".strip()
                        for name, v in {**r.get("published", {}), **r.get("peers_on_this_machine", {})}.items()
                        if v.get("NDCG@10") or v.get("test_NDCG@10_seen_filtered"))
        gflops = t.get("achieved_gflops")
        share = t.get("fraction_of_ceiling")
        speed = "–" if gflops is None or math.isnan(gflops) else f"{gflops}" + (f" ({share:.0%})" if share else "")
        machine = r.get("machine", {})
        threads = machine.get("gpu") or machine.get("torch_threads", "")  # GPU runs: the GPU's name
        setting = _setting(p, model)
        if "refit" in r:  # trained on train + validation for epochs chosen by a selection run; no validation
            setting += f", **refit on train+valid, {r['refit']['epochs']} epochs**"
        rows.append(f"| {path.stem} | {model} | {setting} | {threads} | {t['epochs_run']} ({t['best_epoch']}) "
                    f"| {t['seconds_per_epoch_median']} | {speed} | {t['time_to_best_epoch_s']:.0f} s "
                    f"| {r['test_seen_filtered']['HR@10']:.4f} | {r['test_seen_filtered']['NDCG@10']:.4f} "
                    f"| {r['test_unfiltered']['NDCG@10']:.4f} | {ref} |")
    return rows


def session_table() -> list[str]:
    rows = ["| run | setting | threads | epochs (best) | s/epoch | events/s (training) "
            "| step: forward+loss / backward / optimiser | time to best | Recall@20 | MRR@20 |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        r = json.loads(path.read_text())
        if r.get("split", {}).get("kind") != "session":
            continue
        t, p, prof = r["train"], r["params"], r.get("step_profile") or {}
        share = prof.get("share", {})
        split = " / ".join(f"{share.get(k, 0):.0%}" for k in ("forward_and_loss", "backward", "optimizer")) \
            if share else "–"
        model = r.get("model") or ("gru4rec+" if "gru4rec-plus" in path.stem else
                                   "gru4rec" if "batching" in p else "sasrec")
        setting = _setting(p, model)
        where = r["machine"].get("gpu") or r["machine"]["torch_threads"]
        rows.append(f"| {path.stem} | {setting} | {where} | {t['epochs_run']} ({t['best_epoch']}) "
                    f"| {t['seconds_per_epoch_median']} | {t['events_per_s']:.0f} | {split} "
                    f"| {t['time_to_best_epoch_s']:.0f} s | {r['test']['Recall@20']:.4f} | {r['test']['MRR@20']:.4f} |")
    return rows


def gap_table() -> list[str]:
    variants = ("valid", "test", "test_without_valid", "valid_without_last_train", "last_train")
    rows = ["| run | setting | threads | best epoch | ranker | " + " | ".join(variants) + " |",
            "|---|---|---|---|---|" + "---|" * len(variants)]
    for path in sorted(RESULTS.glob("gap-*.json")):
        r = json.loads(path.read_text())
        for who, values in r["NDCG@10"].items():
            model = "bert4rec" if "mask_prob" in r["params"] else "sasrec"
            rows.append(f"| {path.stem} | {_setting(r['params'], model)} | {r['torch_threads']} | {r['best_epoch']} | {who} | "
                        + " | ".join(f"{values[v]:.4f}" for v in variants) + " |")
    return rows


def audit_table() -> list[str]:
    rows = ["| dataset | verdict (paper) | 2-gram rules: ours (paper) | 3-gram rules: ours (paper) "
            "| SASRec NDCG@10: ours [95% interval] (paper) | GRU4Rec NDCG@10: ours [95% interval] (paper) "
            "| Jaccard@10 SASRec / GRU4Rec: ours (paper) | data after preprocessing "
            "| epochs SASRec, GRU4Rec (stopped by the time budget) | seconds (threads) |",
            "|---|---|---|---|---|---|---|---|---|---|"]

    def pct(x):
        return "–" if x is None else f"{x:+.0%}"

    for path in sorted(RESULTS.glob("audit-*.json")):
        r = json.loads(path.read_text())
        s, paper = r["summary"], r["paper"]
        rules = [f"{s['rules'][n]['true']} → {s['rules'][n]['shuffled_mean']:.1f}, "
                 f"{pct(s['rules'][n]['relative_change'])} ({pct(paper['rules'][n])})" for n in ("2-gram", "3-gram")]
        models, jaccard = [], []
        for m in ("sasrec", "gru4rec"):
            ours, theirs = s["models"].get(m), paper[m]
            star = "*" if theirs["significant"] else ""
            if ours is None:
                models.append(f"– ({pct(theirs['NDCG@10'])}{star})")
                jaccard.append(f"– ({theirs['jaccard@10']:.2f})")
                continue
            c = ours["NDCG@10"]
            models.append(f"{pct(c['relative'])} [{pct(c['low'])}, {pct(c['high'])}]{'*' if c['significant'] else ''} "
                          f"({pct(theirs['NDCG@10'])}{star})")
            jaccard.append(f"{ours['jaccard@10']:.2f} ({theirs['jaccard@10']:.2f})")
        st = r["statistics"]
        paper_verdict = "sequential" if paper["sequential"] else "not sequential"
        trained = ", ".join(f"{t['epochs']}{' (budget)' if t['stop_reason'] == 'time_budget' else ''}"
                            for t in r["training"].values()) or "–"
        rows.append(f"| {path.stem.removeprefix('audit-')} ({r['data']}) | {s['verdict']} ({paper_verdict}) | "
                    + " | ".join(rules + models) + f" | {' / '.join(jaccard)} | {st['users']:,} users, "
                    f"{st['items']:,} items, {st['events']:,} events | {trained} | {r['seconds']['total']:.0f} "
                    f"({r['machine']['torch_threads']}) |")
    return rows


def serve_table() -> list[str]:
    path = RESULTS / "serve.json"
    if not path.is_file():
        return ["(no benchmarks/results/serve.json yet: `python -m benchmarks.serve`)"]
    r = json.loads(path.read_text())
    m, t = r["machine"], r["targets"]
    rows = [f"`seqrec serve` on loopback, {r['model']} ({r['run_dir'].split('/')[-1]}), k={r['k']}, batch requests of "
            f"{r['batch_histories']} histories, {r['duration_s']:.0f} s per row; load generator and server on the same "
            f"{m['cores']}-core machine ({m['cpu']}); server options: {' '.join(r['server_options']) or 'defaults'}. "
            f"Targets: p50 ≤ {t['p50_ms_at_c1']} ms at concurrency 1; ≥ {t['recs_per_s_at_c32']:,.0f} "
            f"recommendations/s at concurrency 32 with p99 ≤ {t['p99_ms_at_c32']} ms; no errors; flat memory.", "",
            "| backend | endpoint | concurrency | requests/s | recommendations/s | p50 ms | p95 ms | p99 ms | errors "
            "| server RSS MiB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["load"]:
        rows.append(f"| {x['backend']} | {x['endpoint']} | {x['concurrency']} | {x['requests_per_s']:,.0f} | "
                    f"{x['recommendations_per_s']:,.0f} | {x['p50_ms']} | {x['p95_ms']} | {x['p99_ms']} | {x['errors']} | "
                    f"{x['rss_mib']:.0f} |")
    for backend, b in r.get("batch_rows", {}).items():
        rows.append(f"\n{backend}: {b['histories']:,} histories in {b['forward_passes']:,} forward passes "
                    f"({b['mean_rows_per_pass']} per pass) over the load runs.")
    if "reload" in r:
        x = r["reload"]
        rows.append(f"\nReload under load (concurrency 32, {x['seconds']:.0f} s): {x['requests']:,} requests, "
                    f"{x['errors']} errors, p99 {x['p99_ms']} ms; the reload answered {x['during']['reload_status']} in "
                    f"{x['during']['reload_seconds']} s, a reload of a missing run directory "
                    f"{x['during']['refused_reload_status']}.")
    if "soak" in r:
        x = r["soak"]
        rows.append(f"\nSoak (concurrency 32, {x['seconds']:.0f} s): {x['requests']:,} requests, {x['errors']} errors, "
                    f"{x['requests_per_s']:,.0f} requests/s, p50 {x['p50_ms']} ms, p99 {x['p99_ms']} ms; server RSS "
                    f"{x['rss_first_tenth_median_mib']:.0f} MiB in the first tenth, {x['rss_last_tenth_median_mib']:.0f} MiB "
                    f"in the last ({x['rss_growth_mib']:+.1f} MiB), at most {x['rss_max_mib']:.0f} MiB.")
    return rows


def scale_table() -> list[str]:
    rows = []
    path = RESULTS / "distributed.json"
    if path.is_file():
        r = json.loads(path.read_text())
        m = r["machine"]
        rows += [f"Data-parallel training, 1 process vs `--devices {r['devices']}` (torchrun + Gloo, one thread per "
                 f"process), {r['epochs']} epochs each, the same global batch; {m['cores']}-core {m['cpu']}.", "",
                 f"| configuration | 1 process s/epoch | {r['devices']} processes s/epoch | speed-up | loss per epoch "
                 f"(1 / {r['devices']}) | test NDCG@10 (1 / {r['devices']}) |", "|---|---|---|---|---|---|"]
        for name, x in r["runs"].items():
            a, b = x["single"], x["parallel"]
            losses = ", ".join(f"{p:.4f} / {q:.4f}" for p, q in zip(a["loss"], b["loss"]))
            rows.append(f"| {name} | {a['median_epoch_s']} | {b['median_epoch_s']} | {x['speedup']}x | {losses} | "
                        f"{a['test_NDCG@10']:.4f} / {b['test_NDCG@10']:.4f} |")
        rows.append("")
    path = RESULTS / "catalogue.json"
    if path.is_file():
        r = json.loads(path.read_text())
        large = r.get("large", {})
        if large:
            any_row = next(iter(v for v in large.values() if "error" not in v), {})
            rows += [f"Losses on a synthetic catalogue (`benchmarks/catalogue.py`): {any_row.get('items', 0):,} items, "
                     f"{any_row.get('users', 0):,} users, {any_row.get('events', 0):,} events; SASRec "
                     f"{json.dumps({k: v for k, v in r['model'].items() if k != 'progress'})}. Seconds per step "
                     "measured on the steps shown (after 3 warm-up steps); the epoch is projected from them.", "",
                     "| loss | steps | s/step | projected epoch s | memory plan GB | peak RSS GB |",
                     "|---|---|---|---|---|---|"]
            for name, x in large.items():
                if "error" in x:
                    rows.append(f"| {name} | failed: {x['error']} | | | | |")
                    continue
                rows.append(f"| {name} | {x['steps']} | {x['seconds_per_step']} | {x['projected_epoch_s']:,} | "
                            f"{x['memory_plan_gb']} | {x['peak_rss_gb']} |")
            rows.append("")
        small = r.get("small", {})
        if small:
            any_row = next(iter(v for v in small.values() if "error" not in v), {})
            full = small.get("ce", {}).get("test_NDCG@10")
            ce = small.get("ce", {})
            still = (" (full softmax was still improving when its budget ran out)"
                     if ce.get("stop_reason") == "time_budget" and ce.get("best_epoch") == ce.get("epochs_run") else "")
            rows += [f"The same generator at {any_row.get('items', 0):,} items ({any_row.get('events', 0):,} events), "
                     f"each loss trained to early stopping (patience 3) or {r.get('small_budget_s', 0):.0f} s of "
                     f"training, whichever came first{still}; test NDCG@10, leave-one-out, full ranking.", "",
                     "| loss | test NDCG@10 | vs full softmax | HR@10 | best epoch / run | stop | s/epoch |",
                     "|---|---|---|---|---|---|---|"]
            for name, x in small.items():
                if "error" in x:
                    rows.append(f"| {name} | failed: {x['error']} | | | | | |")
                    continue
                ratio = f"{x['test_NDCG@10'] / full:.0%}" if full else ""
                rows.append(f"| {name} | {x['test_NDCG@10']:.4f} | {ratio} | {x['test_HR@10']:.4f} | "
                            f"{x['best_epoch']} / {x['epochs_run']} | {x['stop_reason']} | {x['median_epoch_s']} |")
            rows.append("")
        x = r.get("recommend")
        if x and "error" not in x:
            rows += [f"Top-{x['k']} over all {x['items']:,} items for {x['users']:,} users, streamed to Parquet "
                     f"(`write_recommendations`, {x['rows_per_pass']} histories per scoring pass): {x['seconds']} s, "
                     f"{x['users_per_s']:,} users/s; peak RSS {x['peak_rss_gb_before']} GB before ranking (the "
                     f"log and model), {x['peak_rss_gb']} GB after.", ""]
    path = RESULTS / "prepare_stream.json"
    if path.is_file():
        r = json.loads(path.read_text())
        p, w = r["prepare"], r["windows"]
        rows.append(f"Preparing {r['events']:,} events from {r['files']} Parquet files ({r['parquet_gib']} GiB; "
                    f"`benchmarks/prepare_stream.py`): {p['seconds']} s, peak RSS **{p['peak_rss_gb']} GB** (target ≤ "
                    f"{r['target_peak_rss_gb']} GB: {'met' if r['met'] else 'missed'}); after the 5-core filter "
                    f"{p['n_events']:,} events, {p['n_users']:,} users, {p['n_items']:,} items. SASRec's training windows "
                    f"{w['windows']} from the memory-mapped arrays in {w['seconds']} s, peak RSS {w['peak_rss_gb']} GB.")
    return rows or ["(no scale results yet: `python -m benchmarks.distributed`, `.catalogue`, `.prepare_stream`)"]


HEADER = """# Benchmark results

Generated by `python -m benchmarks.table` from `benchmarks/results/*.json`, one row per file; do not edit.
How to run them: [benchmarks/README.md](README.md). Every run's JSON holds its command, machine, configuration,
per-epoch history and protocol card. Speeds compare only within one machine (the threads or GPU column says
which); GFLOP/s are model FLOPs of a training epoch over its median time, against the matmul ceiling the run
measured on its own CPU (runs written before `benchmarks.ceiling` existed report against 110 GFLOP/s fp32,
measured once on the 2-core AMD EPYC machine). Settings list the options that differ from the model's defaults.
"""

def tune_table() -> list[str]:
    rows = ["`seqrec tune` with the model's generic search space (`benchmarks/tune.py`; `patience` 5 fixed). "
            "Defaults: the first trial; selection: the best trial's model (training split); tuned: its refit on "
            "train + validation, the run directory's model. Overfit gap: the search's best validation score minus a "
            "fresh seed's of the same configuration. Test NDCG@10 with seen items filtered.", "",
            "| run | budget (spent) | trials: finished / pruned / failed | defaults valid / test | selection valid "
            "/ test | tuned test | valid–test gap | overfit gap | target | chosen options | most important |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("tune-*.json")):
        r = json.loads(path.read_text())
        n, d, sel = r["trials"], r["defaults"], r["selection"]
        tuned = next(v for k, v in r.items() if k.startswith("tuned_test_"))
        refit = r.get("refit") or {}
        spread = f" ± {refit['std']['NDCG@10']:.4f} ({len(refit['runs'])} seeds)" if len(refit.get("runs", [])) > 1 else ""
        check = r.get("overfit_check") or {}
        # (runs before the pruner's default changed did not record it: the median from epoch 3, after 3 trials)
        p = r.get("pruner") or {"percentile": 50, "from_epoch": 3, "after_finished_trials": 3}
        pruner = f"pruner: {p['percentile']:g}th percentile from epoch {p['from_epoch']}"
        gap = "skipped" if "skipped" in check else "–" if "gap" not in check else \
            f"{'≤ ' if check.get('stop_reason') == 'time_budget' else ''}{check['gap']:+.4f}"
        important = ", ".join(f"{k} {v:.2f}" for k, v in list(r["importance"].items())[:3]
                              if isinstance(v, float)) or r["importance"].get("note", "")
        options = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["params"].items()
                            if k not in r["fixed"])
        target = "" if r["target"] is None else f"{r['target']} ({'met' if r['target_met'] else 'missed'})"
        dvalid = "–" if d["valid"] is None else f"{d['valid']:.4f}"
        dtest = f"{d['test']['NDCG@10']:.4f}" if d.get("test") else "–"
        rows.append(f"| {path.stem} | {r['budget_s'] / 3600:.1f} h ({r['spent_s'] / 60:.0f} min) | "
                    f"{n['COMPLETE']} / {n['PRUNED']} / {n['FAIL']} ({pruner}) | {dvalid} / {dtest} | {sel['valid']:.4f} / "
                    f"{sel['test']['NDCG@10']:.4f} | **{tuned:.4f}**{spread} | {r['valid_test_gap']:+.4f} | "
                    f"{gap} | {target} | {options} | {important} |")
    return rows


SECTIONS = (
    ("Leave-one-out (full ranking; test NDCG@10 with seen items filtered, and without)", "leave_one_out_table"),
    ("Session-based (GRU4Rec protocol: every next event of the last sessions, Recall@20 and MRR@20)",
     "session_table"),
    ("Where a leave-one-out score comes from (NDCG@10 of one model on five history/target variants)",
     "gap_table"),
    ("Sequentiality audit (`seqrec analyze`; relative change with shuffled sequences or histories, * significant; "
     "the paper: Klenitskiy et al., RecSys 2024, Table 3; reports in docs/audits/)", "audit_table"),
    ("Serving", "serve_table"),
    ("Scale", "scale_table"),
    ("Tuning", "tune_table"),
)


def render() -> str:
    parts = [HEADER]
    for title, table in SECTIONS:
        parts.append(f"## {title}\n\n" + "\n".join(globals()[table]()) + "\n")
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--print", action="store_true", help="print instead of writing RESULTS.md")
    args = parser.parse_args()
    text = render()
    if args.print:
        print(text)
    else:
        (RESULTS.parent / "RESULTS.md").write_text(text)


if __name__ == "__main__":
    main()
