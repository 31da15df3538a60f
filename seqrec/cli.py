"""Command line: a thin adapter over the public API. ``main(argv) -> int``.

    seqrec train --data PATH [--model NAME] --out RUN_DIR [--config FILE] [options]
    seqrec train --model gru4rec --help          # that model's options only
    seqrec tune --data PATH --model NAME --budget 2h --out RUN_DIR [--space FILE] [model options fix values]
    seqrec evaluate RUN_DIR [--json] [--protocol sampled ...] [--perturb shuffle]
    seqrec recommend RUN_DIR --history ITEM,ITEM,... --k 10 [--items ITEM,...] [--json]
    seqrec recommend RUN_DIR --users all --k 10 --output FILE.csv|FILE.parquet
    seqrec analyze DATA [--models none] [--json] [--out DIR]   # does it look sequential?

Every flag comes from an option's declaration (:mod:`seqrec.options`): the run's in
:class:`seqrec.runs.RunConfig`, the model's in its class. Options come from the config file (JSON or TOML,
flat keys as the flags without ``--``), then from flags, which win. An unknown option or value fails and
lists the valid ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tomllib
from pathlib import Path

from seqrec import distributed
from seqrec.analysis.audit import AuditOptions
from seqrec.data.sequences import PERTURBATIONS
from seqrec.errors import ConfigError, SeqrecError
from seqrec.export import FORMATS
from seqrec.models import MODELS, build, model_class
from seqrec.options import Options, parse_value
from seqrec.runs import RunConfig
from seqrec.service.options import ServeOptions

log = logging.getLogger("seqrec")
EVALUATE_OPTIONS = ("k", "exclude_seen", "tie_policy", "protocol", "sampling", "eval_negatives")


def _summary(cls) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0].rstrip(".")


def add_options(parser: argparse.ArgumentParser, cls: type[Options], names=None, title: str | None = None,
                defaults_shown: str = "default") -> None:
    """One flag per declared option of ``cls`` (or only ``names``), in argument groups by the options' group
    (``title``'s group first; an option of group "" goes to the parser's main list)."""
    types = cls.option_types()
    groups = {"": parser}
    if title:
        groups[title] = parser.add_argument_group(f"{title} options")
    for name, f in cls.option_fields().items():
        if names is not None and name not in names:
            continue
        group_name = f.metadata.get("group")
        group_name = (title or cls.__name__) if group_name is None else group_name
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(f"{group_name} options")
        kind, choices = types[name], cls.choices(name)
        text = f.metadata.get("help", "")
        if f.default == "":
            text += " (required)"
        elif "default" not in text:
            shown = ",".join(map(str, f.default)) if isinstance(f.default, (list, tuple)) else f.default
            text += f" ({defaults_shown}: {'unset' if shown is None else shown})"
        boolean = kind is bool or kind == (bool | None)
        groups[group_name].add_argument(
            "--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS, help=text,
            type=lambda text, kind=kind: _parse(text, kind), nargs="?" if boolean else None,
            const=True if boolean else None,
            metavar="{" + ",".join(map(str, choices)) + "}" if choices and name != "device" else
            ("BOOL" if boolean else name.upper()))


def _parse(text: str, kind):
    try:
        return parse_value(text, kind)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _train_parser(model: str, command: str = "train") -> argparse.ArgumentParser:
    cls = model_class(model)
    models = "\n".join(f"  {name:<10} {_summary(c)}" for name, c in MODELS.items())
    if command == "tune":
        from seqrec.tuning import TuneConfig

        config, usage = TuneConfig, ("seqrec tune --data PATH --model NAME --budget 2h --out RUN_DIR [--space FILE] "
                                     "[--config FILE] [options]")
        what = ("Search the model's options on validation within a wall-clock budget (Optuna), refit the best "
                "configuration on train + validation, evaluate it on the test split, save the run directory and a "
                "report of the search (RUN_DIR/tune/). A model option given here is fixed (not searched).\n\n"
                f"{model}'s search space:\n" + "\n".join(f"  {n:<14} {json.dumps(s.describe())}"
                                                         for n, s in cls.search_space().items()))
    else:
        config, usage = RunConfig, "seqrec train --data PATH [--model NAME] --out RUN_DIR [--config FILE] [options]"
        what = "Fit a model, evaluate it on the test split, save a run directory."
    parser = argparse.ArgumentParser(
        prog=f"seqrec {command}", formatter_class=argparse.RawDescriptionHelpFormatter, usage=usage,
        description=f"{what}\n\nmodels:\n{models}\n\n"
                    f"The model options below are {model}'s; `seqrec {command} --model NAME --help` lists another's.")
    parser.add_argument("--config", type=Path, help="JSON or TOML file of options (flags override it)")
    add_options(parser, config)
    add_options(parser, cls, title=f"model {model}")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=argparse.SUPPRESS,
                        help="hide progress bars")
    parser.add_argument("--include-seen", dest="exclude_seen", action="store_false", default=argparse.SUPPRESS,
                        help="do not filter the history's items out of rankings")
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqrec", description="Sequential recommendation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True,
                                     metavar="{train,tune,evaluate,recommend,reproduce,analyze,serve,export}")
    commands.add_parser("train", help="fit a model, evaluate it on the test split, save a run directory "
                                      "(seqrec train --help for its options)", add_help=False)
    commands.add_parser("tune", help="search a model's options within a time budget, refit the best, save a run "
                                     "directory and a report (seqrec tune --help)", add_help=False)

    evaluate = commands.add_parser("evaluate", help="evaluate a run directory on its test split")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--perturb", choices=PERTURBATIONS,
                          help="also evaluate with changed histories (shuffled, reversed, last item only, last item "
                               "dropped) and print each metric's change with its bootstrap interval")
    evaluate.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of --perturb (default: "
                                                                      "1000)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of --perturb's shuffle and bootstrap")
    add_options(evaluate, RunConfig, EVALUATE_OPTIONS, defaults_shown="default: the run's own, else")

    rec = commands.add_parser("recommend", help="top-k items for a new history or for known users")
    rec.add_argument("run_dir", type=Path)
    who = rec.add_mutually_exclusive_group(required=True)
    who.add_argument("--history", help="comma-separated external item ids, oldest first")
    who.add_argument("--users", help="'all' or comma-separated external user ids")
    rec.add_argument("--k", type=int, default=10)
    rec.add_argument("--items", help="comma-separated external item ids: recommend only among these")
    rec.add_argument("--include-seen", dest="exclude_seen", action="store_false",
                     help="allow items of the history in the recommendations")
    rec.add_argument("--output", type=Path, help="write a CSV or Parquet file (by extension)")
    rec.add_argument("--json", action="store_true", help="print JSON")

    rep = commands.add_parser("reproduce", help="reproduce a paper's result table (without a table: list them)")
    rep.add_argument("table", nargs="?", help="sasrec-table or bert4rec-table")
    rep.add_argument("--models", help="comma-separated column labels or model names (default: all)")
    rep.add_argument("--seeds", default="0", help="comma-separated seeds; several report mean ± std (default: 0)")
    rep.add_argument("--quick", action="store_true", help="smoke run: 1 epoch, the file's first 1500 users")
    rep.add_argument("--out", type=Path, help="output folder (default: reproduce/TABLE)")
    rep.add_argument("--data", type=Path, help="another interactions file (labelled: not the paper's)")
    rep.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    rep.add_argument("--time-budget", help="seconds of training per model: a number for all, or LABEL=SECONDS "
                                          "pairs and an optional number for the rest (default: the table's)")
    rep.add_argument("--progress", action="store_true", help="show progress bars")

    ana = commands.add_parser(
        "analyze", help="does the dataset look sequential? rules, models on shuffled histories, a verdict",
        description="The sequentiality audit of 'Does It Look Sequential?' (RecSys 2024): statistics, sequential "
                    "rules on true and shuffled sequences, SASRec and GRU4Rec evaluated with true and shuffled "
                    "histories, split diagnostics and a verdict; writes report.md, report.html, audit.json, "
                    "summary.json and plots.")
    ana.add_argument("data", help="interaction log: CSV, TSV or Parquet (optionally .gz)")
    ana.add_argument("--out", type=Path, help="report folder (default: audits/NAME)")
    ana.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    add_options(ana, AuditOptions)

    srv = commands.add_parser("serve", help="serve a run directory over HTTP (API, metrics, a page to look at "
                                            "recommendations)",
                              description="An HTTP service for a run directory (FastAPI + uvicorn): "
                                          "POST /v1/recommend, /v1/recommend/batch, /v1/users/ID/recommendations, "
                                          "/v1/users/ID/events, /v1/model, /healthz, /readyz, /metrics, /docs and "
                                          "the page at /. SIGHUP reloads the run directory without downtime.")
    srv.add_argument("run_dir", type=Path)
    add_options(srv, ServeOptions, title="server")

    exp = commands.add_parser("export", help="export a run directory's model to ONNX (encoder, item table, top-k "
                                             "graph), checked against PyTorch")
    exp.add_argument("run_dir", type=Path)
    exp.add_argument("--format", choices=FORMATS, default="onnx", help="export format (default: onnx)")
    exp.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/onnx)")
    exp.add_argument("--tolerance", type=float, default=1e-3,
                     help="largest absolute score difference accepted by the parity check (default: 0.001)")
    exp.add_argument("--json", action="store_true", help="print the manifest as JSON")
    return parser


def _valid_flags(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(opt for a in parser._actions for opt in a.option_strings if opt.startswith("--"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if args.command in ("train", "tune"):
            rest = argv[argv.index(args.command) + 1:]
            return _run(args, lambda: (_train if args.command == "train" else _tune)(rest))
        if extra:
            sub = parser._subparsers._group_actions[0].choices[args.command]
            parser.error(f"unknown option(s) {extra}; valid options for '{args.command}': {_valid_flags(sub)}")
    except SystemExit as exc:
        return int(exc.code or 0)
    return _run(args, lambda: {"evaluate": _evaluate, "recommend": _recommend, "reproduce": _reproduce,
                               "analyze": _analyze, "serve": _serve, "export": _export}[args.command](args))


def _run(args, command) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="seqrec: %(message)s", stream=sys.stderr, force=True)
    try:
        return command()
    except SeqrecError as exc:
        print(f"seqrec: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        return int(exc.code or 0)


def _read_config_file(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text()
    try:
        values = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot parse: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a table of options")
    return values


def _options(argv: list[str], command: str) -> dict:
    """The options of ``seqrec train|tune``: the config file's, then the flags' (the parser is the chosen
    model's)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    pre.add_argument("--model")
    known, _ = pre.parse_known_args(argv)
    values = _read_config_file(known.config) if known.config else {}
    model = known.model or values.get("model", "sasrec")
    parser = _train_parser(model if model in MODELS else "sasrec", command)
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.error(f"unknown option(s) {extra}; valid options for '{command} --model {model}': "
                     f"{_valid_flags(parser)}")
    return {**values, **{k: v for k, v in vars(args).items() if k != "config"}}


def _tune(argv: list[str]) -> int:
    from seqrec.runs import split_options
    from seqrec.tuning import TuneConfig, overfit_text, tune_run

    config, fixed = split_options(_options(argv, "tune"), TuneConfig)
    fixed.pop("progress", None)  # trials never show progress bars
    report = tune_run(config, fixed)
    metric = report["metric"]
    print(f"best trial {report['best_trial']} of {len(report['trials'])}: validation {metric} "
          f"{report['selection_valid']:.4f}, test {report['selection_test'][metric]:.4f} (selection model)")
    if "refit" in report:
        refit = report["refit"]
        spread = f" ± {refit['std'][metric]:.4f} over {len(refit['runs'])} seeds" if len(refit["runs"]) > 1 else ""
        print(f"refit on train + validation for {refit['epochs']} epochs: test {metric} "
              f"{refit['mean'][metric]:.4f}{spread}")
    if report.get("overfit_check"):
        print(overfit_text(report["overfit_check"]))
    print(f"chosen options: {json.dumps(report['params'], default=str)}")
    print(f"run directory: {config.out} (report: {Path(config.out) / 'tune' / 'report.md'})")
    return 0


def _train(argv: list[str]) -> int:
    from seqrec.runs import split_options, train_run

    run, params = split_options(_options(argv, "train"))
    if run.devices > 1 and "WORLD_SIZE" not in os.environ:  # start the processes; each runs this command
        build(run.model, params).check_data_parallel()
        return distributed.launch(["train", *argv], run.devices)
    if os.environ.get("RANK", "0") != "0":  # in a distributed run the first process reports
        log.setLevel(logging.WARNING)
    try:
        _, result = train_run(run, params)
    finally:
        distributed.stop()
    if not result:  # a process of a distributed run other than the first: it only trained
        return 0
    _print_result(result, as_json=False)
    print(f"run directory: {run.out}")
    if run.recommendations:
        print(f"recommendations: {run.recommendations}")
    return 0


def _evaluate(args) -> int:
    from seqrec.runs import evaluate_run, perturbation_run

    options = {k: v for k, v in vars(args).items() if k in EVALUATE_OPTIONS}
    if args.perturb:
        if args.bootstrap < 1:
            raise ConfigError(f"--bootstrap must be at least 1, got {args.bootstrap}")
        result = perturbation_run(args.run_dir, args.perturb, args.bootstrap, args.seed, **options)
        print(json.dumps(result, default=str) if args.json else _perturbation_text(result))
        return 0
    result = evaluate_run(args.run_dir, **options)
    _print_result(result, as_json=args.json)
    return 0


def _perturbation_text(result: dict) -> str:
    card = result["protocol"]["perturbation"]
    level = result["bootstrap"]["level"]
    lines = [f"histories {result['perturbation']} ({card['reordered']} a model reads), {result['n_rows']} test rows; "
             f"ranking as for the true histories",
             f"{'metric':>10}  {'true':>8}  {result['perturbation']:>9}  {'change':>8}  "
             f"{f'{level:.0%} interval':>20}  {'p':>6}"]
    for name, c in result["change"].items():
        if c["relative"] is None:
            lines.append(f"{name:>10}  {c['true']:8.4f}  {c['perturbed']:9.4f}  (true metric is 0: no change)")
            continue
        interval = f"[{c['low']:+.1%}, {c['high']:+.1%}]"
        lines.append(f"{name:>10}  {c['true']:8.4f}  {c['perturbed']:9.4f}  {c['relative']:+8.1%}  {interval:>20}  "
                     f"{c['p_value']:6.3f}{'  significant' if c['significant'] else ''}")
    key = next(k for k in result if k.startswith("jaccard@"))
    jaccard = result[key]
    lines.append(f"{key.replace('jaccard', 'Jaccard')} of the top lists: {jaccard['mean']:.3f} "
                 f"[{jaccard['low']:.3f}, {jaccard['high']:.3f}]")
    return "\n".join(lines)


def _analyze(args) -> int:
    from seqrec.analysis import analyze

    options = AuditOptions(**{k: v for k, v in vars(args).items() if k in AuditOptions.option_fields()})
    source = Path(args.data)
    name = source.parent.name if source.name.startswith("interactions") else source.name.split(".")[0]
    out = args.out or Path("audits") / (name or "data")
    audit = analyze(args.data, options)
    paths = audit.write(out)
    if args.json:
        print(json.dumps(audit.summary(), default=str))
    else:
        print(f"verdict: {audit.verdict['verdict']} ({audit.verdict['basis']})")
        print(audit.verdict["reason"])
        print(f"report: {paths['html']} (and report.md, audit.json, summary.json, plots in {out})")
    return 0


def _serve(args) -> int:
    from seqrec.service import serve

    names = ServeOptions.option_fields()
    serve(args.run_dir, ServeOptions(**{k: v for k, v in vars(args).items() if k in names}))
    return 0


def _export(args) -> int:
    from seqrec.export import export_onnx

    out = args.out or args.run_dir / "onnx"
    manifest = export_onnx(args.run_dir, out, tolerance=args.tolerance)
    if args.json:
        print(json.dumps(manifest, indent=2))
    else:
        parity = manifest["parity"]
        print(f"exported {manifest['model']} to {out}: encoder.onnx, topk.onnx, item_embeddings.npy"
              f"{', item_bias.npy' if manifest['has_item_bias'] else ''}, items.parquet, export.json "
              f"({manifest['seconds']} s)\nparity on {parity['histories']} histories: max |score diff| "
              f"{parity['max_abs_score_diff']:.2e}, identical top-10 in {parity['top10_identical_share']:.0%}")
    return 0


def _recommend(args) -> int:
    from seqrec.models import load
    from seqrec.runs import write_recommendations

    model = load(args.run_dir)
    items = None if args.items is None else _match(model.vocab_.items, _listed(args.items))
    if args.history is not None:
        history = _listed(args.history)
        unknown = model.encode_histories([history])[1][0]
        ranked, scores = model.recommend([history], k=args.k, exclude_seen=args.exclude_seen, items=items)
        keep = [i for i, s in enumerate(scores[0]) if s != float("-inf")]
        payload = {"history": history, "unknown_items": unknown, "k": args.k,
                   "items": [_plain(ranked[0][i]) for i in keep], "scores": [float(scores[0][i]) for i in keep]}
        if args.json:
            print(json.dumps(payload))
        else:
            if unknown:
                print(f"ignored unknown items: {unknown}", file=sys.stderr)
            for rank, (item, score) in enumerate(zip(payload["items"], payload["scores"]), 1):
                print(f"{rank}\t{item}\t{score:.4f}")
        return 0
    users = "all" if args.users.strip() == "all" else _match(model.vocab_.users, _listed(args.users))
    if args.output:
        write_recommendations(model, users, args.k, args.exclude_seen, args.output, items)
        return 0
    frame = model.recommend_users(users, k=args.k, exclude_seen=args.exclude_seen, items=items)
    print(frame.to_json(orient="records") if args.json else frame.to_csv(index=False), end="\n" if args.json else "")
    return 0


def _reproduce(args) -> int:
    from seqrec import reproduce

    if not args.table:
        print(reproduce.describe_tables())
        return 0
    try:
        seeds = [int(s) for s in _listed(args.seeds)]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    budgets = {}
    for part in _listed(args.time_budget or ""):
        label, _, value = part.rpartition("=")
        try:
            budgets[label or None] = float(value)
        except ValueError:
            raise ConfigError(f"--time-budget: {part!r} is not SECONDS or LABEL=SECONDS") from None
    out = args.out or Path("reproduce") / args.table
    reproduce.run_table(args.table, out, models=_listed(args.models) if args.models else None, seeds=seeds,
                        quick=args.quick, data=args.data, device=args.device, time_budget=budgets,
                        progress=args.progress)
    print((out / "table.md").read_text())
    print(f"wrote {out / 'results.json'}, {out / 'table.md'}, {out / 'chart.png'}")
    return 0


def _listed(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _match(vocabulary, ids: list[str]) -> list:
    """Command-line ids are text; match them to integer ids when the vocabulary holds integers."""
    if vocabulary.dtype.kind in "iu":
        try:
            return [int(u) for u in ids]
        except ValueError:
            pass
    return ids


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _print_result(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, default=str))
        return
    for name, value in result["metrics"].items():
        print(f"{name:>16}  {value:.4f}")
    print("protocol card:")
    print(json.dumps(result["protocol"], indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
