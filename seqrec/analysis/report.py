"""The audit's report: the verdict first, one paragraph per finding, plots with labelled axes; written as
Markdown (``report.md``), as one self-contained HTML page (``report.html``, plots embedded: it opens in any
browser without the other files) and as JSON (``audit.json``, everything; ``summary.json``, the short form).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from seqrec.analysis.audit import LABELS


def write_report(audit, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    plots = {"rules": _plot_rules(audit, out / "rules.png"), "lengths": _plot_lengths(audit, out / "lengths.png")}
    if audit.models:
        plots["models"] = _plot_models(audit, out / "models.png")
        plots["jaccard"] = _plot_jaccard(audit, out / "jaccard.png")
    else:
        for name in ("models.png", "jaccard.png"):  # a previous audit's plots must not pass for this one's
            (out / name).unlink(missing_ok=True)
    blocks = _blocks(audit, plots)
    paths = {"markdown": out / "report.md", "html": out / "report.html", "json": out / "audit.json",
             "summary": out / "summary.json", **plots}
    paths["markdown"].write_text(_markdown(blocks))
    paths["html"].write_text(_html(blocks, audit))
    paths["json"].write_text(json.dumps(audit.to_dict(), indent=2, default=_plain) + "\n")
    paths["summary"].write_text(json.dumps(audit.summary(), indent=2, default=_plain) + "\n")
    return paths


# ---- content ------------------------------------------------------------------------------------

def _pct(x) -> str:
    return "n/a" if x is None else f"{x:+.0%}" if abs(x) >= 0.1 else f"{x:+.1%}"


def _blocks(audit, plots: dict) -> list:
    name = Path(audit.source).parent.name if "/" in audit.source else audit.source
    v = audit.verdict
    s, raw = audit.stats, audit.raw
    b = [("h1", f"Does it look sequential? {name}"),
         ("verdict", f"Verdict: {v['verdict'].upper()}"),
         ("p", f"{v['basis']}. {v['reason']}", "Basis:"),
         ("p", _thresholds_text(v), "Thresholds:"),
         ("h2", "Findings")]
    # rules
    rules = audit.rules
    parts = []
    for key, r in rules["orders"].items():
        parts.append(f"{r['true']:,} {key} rules hold on the true order and {r['shuffled_mean']:.1f} "
                     f"(± {r['shuffled_std']:.1f}) on shuffled sequences ({_pct(r['relative_change'])})")
    b.append(("p", f"A rule is a run of items in one user's sequence (a → b, or a, b → c) "
                   f"occurring more than {rules['support']:g} times with confidence above {rules['confidence']:g}. "
                   + "; ".join(parts) + f" (mean over {len(rules['seeds'])} shuffles within each user). "
                   "Rules that vanish when the order is shuffled were about order; rules that stay were about "
                   "which items go together.", "Sequential rules."))
    b.append(("img", plots["rules"], "Rules holding on the true and on shuffled sequences"))
    # models
    if audit.models:
        for m in audit.models:
            label = LABELS.get(m["model"], m["model"])
            tr = m["training"]
            lines = []
            for metric in ("NDCG@10", "HR@10"):
                c = m["change"][metric]
                if c["relative"] is None:
                    lines.append(f"{metric} is 0 with the true histories: no change can be measured")
                    continue
                lines.append(f"{metric} {c['true']:.4f} with the true histories and {c['perturbed']:.4f} with "
                             f"shuffled ones ({_pct(c['relative'])}, {1 - audit.options['alpha']:.0%} "
                             f"interval [{_pct(c['low'])}, {_pct(c['high'])}], {_p(c['p_value'], audit)}, "
                             f"{'significant' if c['significant'] else 'not significant'})")
            stop = {"patience": "early-stopped", "time_budget": "stopped by the time budget",
                    "epochs": "ran every epoch"}.get(tr["stop_reason"], tr["stop_reason"])
            b.append(("p", f"({tr['epochs']} epochs, best {tr['best_epoch']}, {stop}, {m['seconds']:.0f} s): "
                           + "; ".join(lines) + f", over {m['n_rows']:,} test users.", f"{label}"))
        b.append(("p", "A model that uses the order of a history loses accuracy when it reads the same items in a "
                       "random order; one that does not, loses nothing. The interval is a paired bootstrap over "
                       f"the test users ({audit.options['n_bootstrap']} resamples)."))
        b.append(("img", plots["models"], "Metrics with true and shuffled histories, and their relative change"))
        jac = "; ".join(f"{LABELS.get(m['model'], m['model'])} {m['jaccard@10']['mean']:.2f} "
                        f"[{m['jaccard@10']['low']:.2f}, {m['jaccard@10']['high']:.2f}]" for m in audit.models)
        b.append(("p", f"The mean Jaccard similarity of each user's top-10 list from the true and "
                       f"from the shuffled history: {jac}. 1 means shuffling changes nothing a user is shown; "
                       "near 0, the recommendations follow the order.", "Top-10 lists."))
        b.append(("img", plots["jaccard"], "Items shared by each test user's two top-10 lists"))
    else:
        b.append(("p", "skipped (--models none). The verdict rests on the rules alone.", "Model-based test:"))
    # data
    sl = s["sequence_length"]
    t = s["time"]
    if t["positions_only"]:
        time_text = "The timestamps are only positions within each sequence: the file keeps the order, not the time."
    elif t.get("unit"):
        time_text = (f"Events run from {t['first']} to {t['last']} ({t['span_days']:.0f} days, timestamps read "
                     f"as unix {t['unit']}).")
    else:
        time_text = f"Timestamps run from {t['min']:g} to {t['max']:g} (unit unknown)."
    rr = raw["repeats"]
    b.append(("p", f"After preprocessing: {s['users']:,} users, {s['items']:,} items, {s['events']:,} "
                   f"events (density {s['density']:.2e}); sequences of {sl['min']} to {sl['max']} events (median "
                   f"{sl['p50']:g}, mean {sl['mean']:.1f}, 90th percentile {sl['p90']:g}). The raw log had "
                   f"{raw['events']:,} events of {raw['users']:,} users on {raw['items']:,} items, with "
                   f"{rr['consecutive']:,} consecutive repeats ({rr['consecutive_share']:.1%}) and {rr['total']:,} "
                   f"repeats of an item seen before ({rr['total_share']:.1%}), and "
                   f"{raw['timestamp_ties']['events']:,} events sharing their timestamp with the user's previous "
                   f"one ({raw['timestamp_ties']['share']:.1%}). {time_text}", "The data."))
    b.append(("img", plots["lengths"], "Sequence lengths after preprocessing"))
    # split
    sp = audit.split
    card = sp["card"]
    leak = sp["leakage"]
    if not leak["measurable"]:
        leak_text = f"Leakage: not measurable; {leak['note']}."
    elif "share_of_targets" in leak:
        leak_text = (f"Leakage: {leak['share_of_targets']:.1%} of the test targets happen before some training "
                     f"event of another user; on average {leak['mean_share_of_training_events_after_target']:.1%} of "
                     "the training events come after a test target.")
    else:
        leak_text = f"Leakage: {leak['note']}."
    cold = sp["cold"]
    b.append(("p", f"{SPLIT_NAMES.get(sp['kind'], sp['kind'])} ({sp['reason']}): {card['n_train_events']:,} "
                   "training events, "
                   f"{card['n_valid']:,} validation and {card['n_test']:,} test users. {leak_text} Cold start: "
                   f"{cold['cold_users']:,} of {cold['test_users']:,} test users have no training event, "
                   f"{cold['cold_target_items']:,} test targets and {cold['cold_history_events']:,} of "
                   f"{cold['history_events']:,} history events are items without a training event.", "The split."))
    # method
    b.append(("h2", "How this was measured"))
    rows = [[entry["filter"], f"{entry['events_removed']:,}", f"{entry['users_removed']:,}",
             f"{entry['items_removed']:,}"] for entry in audit.preprocessing]
    b.append(("p", "Preprocessing (the paper's by default: iterative 5-core, consecutive repeats removed):"))
    b.append(("table", ["filter", "events removed", "users removed", "items removed"],
              rows or [["(none)", "0", "0", "0"]]))
    if audit.models:
        settings = []
        for m in audit.models:
            p = m["params"]
            keys = ("loss", "dim", "n_blocks", "n_heads", "dropout", "input_dim", "hidden_dropout", "max_len",
                    "lr", "batch_size", "epochs", "patience", "time_budget")
            settings.append([LABELS.get(m["model"], m["model"]),
                             ", ".join(f"{k} {p[k]}" for k in keys if k in p and p[k] is not None)])
        b.append(("table", ["model", "settings"], settings))
        b.append(("p", _protocol_text(audit), "Protocol:"))
    b.append(("p", "The bootstrap is paired (the same users on both sides; the paper's "
                   "code resamples the two groups independently); validation is the last training event of up to "
                   f"{audit.options['valid_users']} users (the paper holds 500 users out of training); training is "
                   "capped by a time budget per model (the model lines above say when it stopped one); on files "
                   "whose timestamps are only positions, leave-one-out replaces the temporal split.",
              "Deviations from the paper:"))
    secs = ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in audit.seconds.items())
    b.append(("p", f"{secs}. Source: {audit.source}.", "Time:"))
    return b


SPLIT_NAMES = {"loo": "Leave-one-out", "temporal": "Global temporal split"}


def _p(p_value: float, audit) -> str:
    """A bootstrap p-value of 0 only says it is below one resample's share."""
    floor = 1 / audit.options["n_bootstrap"]
    return f"p < {floor:.2g}" if p_value < floor else f"p = {p_value:.3f}"


def _thresholds_text(v: dict) -> str:
    t = v["thresholds"]
    if "strong_drop" in t:
        return (f"sequential when some model's NDCG@10 falls significantly (its {1 - t['alpha']:.0%} interval "
                f"lies below 0) by {t['strong_drop']:.0%} or more; weakly sequential when the largest significant "
                f"fall is {t['weak_drop']:.0%} or more; not sequential when no model's falls significantly, or "
                f"only by less than {t['weak_drop']:.0%} (with many test users even a negligible drop is "
                "significant).")
    return (f"(rules only) sequential when the 2-gram rules fall by {t['rules_strong']:.0%} or more "
            f"on shuffled sequences, weakly sequential by {t['rules_weak']:.0%} or more. Rules alone misjudge some "
            "datasets (in the paper, Steam and Yelp lose nearly all their rules yet their models do not use "
            "order): run the model-based test for a firmer verdict.")


def _protocol_text(audit) -> str:
    card = audit.models[0]["protocol"]
    return (f"{card['candidates']}; seen items {'filtered' if card['seen_filtering'] else 'kept'} (the paper "
            f"keeps them); ties {card['tie_policy']}; each test user's history shuffled within the "
            f"{card['perturbation']['reordered'].removeprefix('the ')} the model reads, target and ranking "
            "unchanged; shuffle and "
            f"bootstrap seed {card['perturbation']['seed']}.")


# ---- rendering --------------------------------------------------------------------------------------

def _markdown(blocks: list) -> str:
    lines = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            lines += [f"# {block[1]}", ""]
        elif kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind == "verdict":
            lines += [f"**{block[1]}**", ""]
        elif kind == "p":
            lines += [(f"**{block[2]}** " if len(block) > 2 else "") + block[1], ""]
        elif kind == "img":
            lines += [f"![{block[2]}]({Path(block[1]).name})", ""]
        elif kind == "table":
            lines += ["| " + " | ".join(block[1]) + " |", "|" + "---|" * len(block[1])]
            lines += ["| " + " | ".join(map(str, row)) + " |" for row in block[2]] + [""]
    return "\n".join(lines)


def _html(blocks: list, audit) -> str:
    colour = {"sequential": "#1b7837", "weakly sequential": "#b8860b", "not sequential": "#b2182b"}
    body = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "verdict":
            body.append(f'<p class="verdict" style="color:{colour.get(audit.verdict["verdict"], "#000")}">'
                        f"{html.escape(block[1])}</p>")
        elif kind == "p":
            lead = f"<strong>{html.escape(block[2])}</strong> " if len(block) > 2 else ""
            body.append(f"<p>{lead}{html.escape(block[1])}</p>")
        elif kind == "img":
            data = base64.b64encode(Path(block[1]).read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(c)}</th>" for c in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                           for row in block[2])
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
    style = ("body{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;line-height:1.5;padding:0 1em}"
             ".verdict{font-size:1.6em;font-weight:bold}img{max-width:100%}figcaption{color:#555;font-size:.9em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}")
    title = html.escape(blocks[0][1])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ---- plots ------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_rules(audit, path: Path) -> Path:
    plt = _pyplot()
    orders = audit.rules["orders"]
    names = list(orders)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    true = [orders[n]["true"] for n in names]
    shuffled = [orders[n]["shuffled_mean"] for n in names]
    ax.bar(x - 0.2, true, 0.4, label="true order", color="#2166ac")
    ax.bar(x + 0.2, shuffled, 0.4, yerr=[orders[n]["shuffled_std"] for n in names], capsize=4,
           label=f"shuffled within users (mean ± std, {len(audit.rules['seeds'])} seeds)", color="#f4a582")
    for i in range(len(names)):
        ax.annotate(f"{true[i]:,}", (x[i] - 0.2, true[i]), ha="center", va="bottom", fontsize=8)
        ax.annotate(f"{shuffled[i]:,.1f}", (x[i] + 0.2, shuffled[i]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"{n} rules" for n in names])
    ax.set_ylabel(f"rules holding (support > {audit.rules['support']:g}, conf. > {audit.rules['confidence']:g})")
    ax.set_title("Sequential rules")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _plot_lengths(audit, path: Path) -> Path:
    plt = _pyplot()
    lengths = np.asarray(audit.lengths)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    top = max(int(lengths.max()), 2)
    bins = np.unique(np.geomspace(1, top + 1, 40).astype(int))
    ax.hist(lengths, bins=bins, color="#4393c3")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("events per user (after preprocessing, log scale)")
    ax.set_ylabel("users (log scale)")
    ax.set_title("Sequence lengths")
    return _save(plt, fig, path)


def _plot_models(audit, path: Path) -> Path:
    plt = _pyplot()
    metrics = ("HR@10", "NDCG@10")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    labels, true, shuffled, rel, low, high = [], [], [], [], [], []
    for m in audit.models:
        for metric in metrics:
            c = m["change"][metric]
            labels.append(f"{LABELS.get(m['model'], m['model'])}\n{metric}")
            true.append(c["true"])
            shuffled.append(c["perturbed"])
            rel.append(np.nan if c["relative"] is None else 100 * c["relative"])
            low.append(np.nan if c["low"] is None else 100 * c["low"])
            high.append(np.nan if c["high"] is None else 100 * c["high"])
    x = np.arange(len(labels))
    left.bar(x - 0.2, true, 0.4, label="true histories", color="#2166ac")
    left.bar(x + 0.2, shuffled, 0.4, label="shuffled histories", color="#f4a582")
    left.set_xticks(x, labels, fontsize=8)
    left.set_ylabel("metric on the test users")
    left.set_title("Accuracy")
    left.legend(fontsize=8)
    rel, low, high = map(np.asarray, (rel, low, high))
    right.errorbar(x, rel, yerr=[rel - low, high - rel], fmt="o", capsize=5, color="#b2182b")
    right.axhline(0, color="black", linewidth=0.8)
    right.axhline(-100 * audit.options["strong_drop"], color="grey", linestyle="--", linewidth=0.8,
                  label=f"-{audit.options['strong_drop']:.0%}: 'sequential' threshold")
    right.set_xticks(x, labels, fontsize=8)
    right.set_ylabel("relative change with shuffled histories (%)")
    right.set_title(f"Change, {1 - audit.options['alpha']:.0%} bootstrap interval")
    right.legend(fontsize=8)
    return _save(plt, fig, path)


def _plot_jaccard(audit, path: Path) -> Path:
    """Jaccard@10 takes 11 values (c / (20 - c) for c shared items): bars of the shared items read better."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    k = 10
    shared = np.arange(k + 1)
    width = 0.8 / max(len(audit.models), 1)
    for i, m in enumerate(audit.models):
        rows = np.asarray(audit.jaccard_rows.get(m["model"], []))
        if len(rows):
            counts = np.bincount(np.rint(2 * k * rows / (1 + rows)).astype(int), minlength=k + 1)[:k + 1]
            ax.bar(shared + (i - (len(audit.models) - 1) / 2) * width, 100 * counts / len(rows), width,
                   label=f"{LABELS.get(m['model'], m['model'])} (mean Jaccard@10 {m['jaccard@10']['mean']:.2f})")
    ax.set_xticks(shared)
    ax.set_xlabel("items the top-10 lists from the true and the shuffled history share")
    ax.set_ylabel("test users (%)")
    ax.set_title("How much shuffling changes the recommendations")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
