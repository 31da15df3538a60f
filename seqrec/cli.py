"""Command line: a thin adapter over the public API. ``main(argv) -> int``.

    seqrec train --data PATH --model sasrec --loss ce --out RUN_DIR [--config FILE] [options]
    seqrec evaluate RUN_DIR [--json] [--protocol sampled ...]
    seqrec recommend RUN_DIR --history ITEM,ITEM,... --k 10 [--json]
    seqrec recommend RUN_DIR --users all --k 10 --output FILE.csv|FILE.parquet

Options come from the config file (JSON or TOML, keys as in :class:`seqrec.runs.RunConfig`), then
from flags, which win. An unknown option or value fails and lists the valid ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tomllib
from pathlib import Path

from seqrec.errors import ConfigError, SeqrecError
from seqrec.runs import MODEL_OPTIONS, RunConfig

log = logging.getLogger("seqrec")


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}; choose from [true, false]")


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid list of integers {text!r} (e.g. 10,20)") from None


_TYPES = {**RunConfig.TYPES, "k": _ints, "bucketing": _bool, "bf16": _bool, "exclude_seen": _bool}


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    defaults = RunConfig()
    for name in RunConfig.fields():
        default = getattr(defaults, name)
        kind = _TYPES.get(name) or (_bool if isinstance(default, bool) else type(default))
        flag = "--" + name.replace("_", "-")
        choices = RunConfig.CHOICES.get(name)
        if name == "device":
            choices = None  # cuda:1 is valid; checked by RunConfig.check
        shown = "the model's own" if default is None and name in MODEL_OPTIONS else default
        parser.add_argument(flag, dest=name, type=kind, choices=choices, default=argparse.SUPPRESS,
                            metavar=None if choices else name.upper(), help=f"default: {shown}")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=argparse.SUPPRESS,
                        help="hide progress bars")
    parser.add_argument("--include-seen", dest="exclude_seen", action="store_false", default=argparse.SUPPRESS,
                        help="do not filter the history's items out of rankings")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqrec", description="Sequential recommendation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,recommend}")

    train = commands.add_parser("train", help="fit a model, evaluate it on the test split, save a run directory")
    train.add_argument("--config", type=Path, help="JSON or TOML file of options (flags override it)")
    _add_run_options(train)

    evaluate = commands.add_parser("evaluate", help="evaluate a run directory on its test split")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    for name in ("k", "exclude_seen", "tie_policy", "protocol", "sampling", "eval_negatives", "seed"):
        default = getattr(RunConfig(), name)
        evaluate.add_argument("--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS,
                              type=_TYPES.get(name) or (_bool if isinstance(default, bool) else type(default)),
                              choices=RunConfig.CHOICES.get(name), help=f"default: the run's own ({default})")

    rec = commands.add_parser("recommend", help="top-k items for a new history or for known users")
    rec.add_argument("run_dir", type=Path)
    who = rec.add_mutually_exclusive_group(required=True)
    who.add_argument("--history", help="comma-separated external item ids, oldest first")
    who.add_argument("--users", help="'all' or comma-separated external user ids")
    rec.add_argument("--k", type=int, default=10)
    rec.add_argument("--include-seen", dest="exclude_seen", action="store_false",
                     help="allow items of the history in the recommendations")
    rec.add_argument("--output", type=Path, help="write a CSV or Parquet file (by extension)")
    rec.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _valid_options(parser: argparse.ArgumentParser, command: str | None) -> list[str]:
    for action in parser._actions:  # the subparsers action holds one parser per command
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            parser = action.choices[command]
    return sorted(opt for a in parser._actions for opt in a.option_strings if opt.startswith("--"))


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            command = getattr(args, "command", None)
            parser.error(f"unknown option(s) {extra}; valid options for '{command}': "
                         f"{_valid_options(parser, command)}")
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="seqrec: %(message)s", stream=sys.stderr, force=True)
    try:
        return {"train": _train, "evaluate": _evaluate, "recommend": _recommend}[args.command](args)
    except SeqrecError as exc:
        print(f"seqrec: error: {exc}", file=sys.stderr)
        return 2


def _options(args: argparse.Namespace, skip=("command", "verbose", "config", "run_dir", "json")) -> dict:
    return {k: v for k, v in vars(args).items() if k not in skip}


def _read_config_file(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text()
    try:
        return tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot parse: {exc}") from None


def _train(args) -> int:
    from seqrec.runs import train_run

    values = _read_config_file(args.config) if args.config else {}
    config = RunConfig.from_dict({**values, **_options(args)})
    _, result = train_run(config)
    _print_result(result, as_json=False)
    print(f"run directory: {config.out}")
    if config.recommendations:
        print(f"recommendations: {config.recommendations}")
    return 0


def _evaluate(args) -> int:
    from seqrec.runs import evaluate_run

    if not (args.run_dir / "config.json").is_file():
        raise ConfigError(f"{args.run_dir}: not a run directory (no config.json)")
    result = evaluate_run(args.run_dir, **_options(args))
    _print_result(result, as_json=args.json)
    return 0


def _recommend(args) -> int:
    from seqrec.models import load
    from seqrec.runs import write_recommendations

    model = load(args.run_dir)
    if args.history is not None:
        history = [x.strip() for x in args.history.split(",") if x.strip()]
        encoded, unknown = model.encode_histories([history])
        items, scores = model.recommend([history], k=args.k, exclude_seen=args.exclude_seen)
        keep = [i for i, s in enumerate(scores[0]) if s != float("-inf")]
        payload = {"history": history, "unknown_items": unknown, "k": args.k,
                   "items": [_plain(items[0][i]) for i in keep], "scores": [float(scores[0][i]) for i in keep]}
        if args.json:
            print(json.dumps(payload))
        else:
            if unknown:
                print(f"ignored unknown items: {unknown}", file=sys.stderr)
            for rank, (item, score) in enumerate(zip(payload["items"], payload["scores"]), 1):
                print(f"{rank}\t{item}\t{score:.4f}")
        return 0
    users = "all" if args.users.strip() == "all" else [u.strip() for u in args.users.split(",")]
    if users != "all":
        users = _match_users(model, users)
    if args.output:
        write_recommendations(model, users, args.k, args.exclude_seen, args.output)
        return 0
    frame = model.recommend_users(users, k=args.k, exclude_seen=args.exclude_seen)
    if args.json:
        print(frame.to_json(orient="records"))
    else:
        print(frame.to_csv(index=False), end="")
    return 0


def _match_users(model, users: list[str]) -> list:
    """Command-line user ids are text; match them to integer ids when the vocabulary holds integers."""
    if model.vocab_.users.dtype.kind in "iu":
        try:
            return [int(u) for u in users]
        except ValueError:
            pass
    return users


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
