"""A run: read data, split, fit, evaluate on the test split, save everything to a run directory.

:class:`RunConfig` is the one typed source of every option the CLI and config files accept.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seqrec.data.interactions import CORES, read_interactions
from seqrec.data.splits import EvalSet, Split, leave_one_out, session_split, temporal_split
from seqrec.errors import ConfigError, DataError, choose
from seqrec.evaluate import PROTOCOLS, SAMPLINGS, evaluate
from seqrec.losses import ALL_LOSSES
from seqrec.metrics import TIE_POLICIES
from seqrec.models import BATCHINGS, DEVICES, MODELS, SequentialRecommender, load
from seqrec.nn.bert4rec import HEADS, INITS, NORMS
from seqrec.optim import OPTIMIZERS

log = logging.getLogger(__name__)
SPLITS = ("loo", "temporal", "session")


@dataclass
class RunConfig:
    # data
    data: str = ""
    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str = "timestamp"
    sep: str | None = None
    min_user_events: int = 0
    min_item_events: int = 0
    core: str = "iterative"
    drop_repeats: bool = False
    # split
    split: str = "loo"
    quantile: float = 0.9
    valid_users: int | None = None
    test_fraction: float = 0.1
    days: float | None = None
    # model and training; None = the chosen model's own default (see its docstring)
    model: str = "sasrec"
    loss: str | None = None
    max_len: int | None = None
    dim: int | None = None
    n_heads: int | None = None
    n_blocks: int | None = None
    n_layers: int | None = None
    embedding: int | None = None
    head: str | None = None
    norm: str | None = None
    init: str | None = None
    mask_prob: float | None = None
    mask_token_share: float | None = None
    last_mask_prob: float | None = None
    dropout: float | None = None
    attn_dropout: float | None = None
    item_dropout: float | None = None
    sliding_window: float | None = None
    dropout_embed: float | None = None
    dropout_hidden: float | None = None
    n_negatives: int | None = None
    sample_alpha: float | None = None
    logq: float | None = None
    bpreg: float | None = None
    elu: float | None = None
    batching: str | None = None
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float | None = None
    batch_size: int | None = None
    bucketing: bool | None = None
    epochs: int | None = None
    patience: int | None = None
    time_budget: float | None = None
    seed: int = 0
    device: str = "cpu"
    bf16: bool | None = None
    refit: bool = False  # after early stopping, retrain on train + validation for the chosen epochs
    # evaluation and outputs
    k: list = field(default_factory=lambda: [10, 20])
    exclude_seen: bool | None = None  # None: True, except for the session protocol (False, as GRU4Rec papers)
    tie_policy: str = "expected"
    protocol: str = "full"
    sampling: str = "uniform"
    eval_negatives: int = 100
    out: str = ""
    recommendations: str | None = None
    rec_k: int = 10
    progress: bool = True

    CHOICES = {"core": CORES, "split": SPLITS, "model": tuple(MODELS), "loss": ALL_LOSSES, "device": DEVICES,
               "tie_policy": TIE_POLICIES, "protocol": PROTOCOLS, "sampling": SAMPLINGS, "head": HEADS,
               "norm": NORMS, "init": INITS, "batching": BATCHINGS, "optimizer": OPTIMIZERS}
    # the type of each option whose default is None
    TYPES = {"valid_users": int, "days": float, "loss": str, "max_len": int, "dim": int, "n_heads": int,
             "n_blocks": int, "n_layers": int, "embedding": int, "head": str, "norm": str, "init": str,
             "mask_prob": float, "mask_token_share": float, "last_mask_prob": float, "dropout": float,
             "attn_dropout": float, "item_dropout": float, "sliding_window": float, "dropout_embed": float,
             "dropout_hidden": float, "n_negatives": int, "sample_alpha": float, "logq": float, "bpreg": float,
             "elu": float, "batching": str, "optimizer": str, "lr": float, "weight_decay": float, "momentum": float,
             "batch_size": int, "bucketing": bool, "epochs": int, "patience": int, "time_budget": float,
             "bf16": bool, "exclude_seen": bool, "sep": str, "recommendations": str}

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        unknown = sorted(set(values) - set(cls.fields()))
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown}; valid options: {cls.fields()}")
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        for name, valid in self.CHOICES.items():
            value = getattr(self, name)
            if value is not None:
                choose(name.replace("_", " "), value.split(":")[0] if name == "device" else value, valid)
        if not self.data:
            raise ConfigError("no data: give --data PATH (or 'data' in the config file)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def filter_seen(self) -> bool:
        return self.split != "session" if self.exclude_seen is None else self.exclude_seen


def read_and_split(config: RunConfig) -> Split:
    log_ = read_interactions(config.data, config.user_col, config.item_col, config.time_col, sep=config.sep,
                             min_user_events=config.min_user_events, min_item_events=config.min_item_events,
                             core=config.core, drop_repeats=config.drop_repeats)
    log.info("%s: %d events, %d users, %d items", log_.source, log_.n_events, log_.n_users, log_.n_items)
    if config.split == "loo":
        return leave_one_out(log_, config.valid_users, config.seed)
    if config.split == "session":
        return session_split(log_, config.test_fraction, config.days)
    return temporal_split(log_, config.quantile, config.valid_users, config.seed)


MODEL_OPTIONS = ("loss", "max_len", "dim", "n_heads", "n_blocks", "n_layers", "embedding", "head", "norm", "init",
                 "mask_prob", "mask_token_share", "last_mask_prob", "dropout", "attn_dropout", "item_dropout",
                 "sliding_window", "dropout_embed", "dropout_hidden", "n_negatives", "sample_alpha", "logq", "bpreg",
                 "elu", "batching", "optimizer", "lr", "weight_decay", "momentum", "batch_size", "bucketing", "epochs",
                 "patience", "time_budget", "seed", "device", "bf16", "progress")


def build_model(config: RunConfig) -> SequentialRecommender:
    """The configured model; options left at None take the model's own defaults. An option set for a
    model that has no such parameter is an error (it would otherwise be silently ignored)."""
    cls = MODELS[config.model]
    accepted = set(cls().get_params())
    given = {name: getattr(config, name) for name in MODEL_OPTIONS if getattr(config, name) is not None}
    unused = sorted(set(given) - accepted)
    if unused:
        raise ConfigError(f"option(s) {unused} do not apply to model '{config.model}'; its options: "
                          f"{sorted(accepted - {'progress'})}")
    return cls(**given)


def train_run(config: RunConfig) -> tuple[SequentialRecommender, dict]:
    """Fit, evaluate on the test split, save to ``config.out``; returns the model and the result."""
    config.check()
    if not config.out:
        raise ConfigError("no run directory: give --out RUN_DIR")
    split = read_and_split(config)
    model = build_model(config).fit(split.train, valid=split.valid, exclude_seen=config.filter_seen)
    selection_seconds = None
    if config.refit:
        log.info("refit on training + validation data for %d epochs (the best of the selection run)",
                 model.train_result_.best_epoch)
        selection_seconds = model.train_result_.history[-1].elapsed
        model = model.refit(split.train_valid)
    model.set_histories(split.log)  # recommendations for known users use everything known about them
    out = model.save(config.out)
    np.savez(out / "split.npz", train_lengths=split.train_lengths, train_valid_lengths=split.train_valid_lengths,
             valid_users=split.valid.users,
             valid_cuts=split.valid.cuts, test_users=split.test.users, test_cuts=split.test.cuts)
    saved = json.loads((out / "config.json").read_text())
    saved.update({"run": config.to_dict(), "split": split.card(), "data": split.log.summary(),
                  "filters": split.log.report})
    (out / "config.json").write_text(json.dumps(saved, indent=2, default=str) + "\n")
    result = evaluate_run(out, config, model=model)
    result["training"] = {"best_epoch": model.train_result_.best_epoch,
                          "epochs_run": len(model.train_result_.history),
                          "stop_reason": model.train_result_.stop_reason,
                          "train_seconds": sum(r.seconds for r in model.train_result_.history),
                          "wall_seconds": model.train_result_.history[-1].elapsed}
    if config.refit:  # the model evaluated is the refit; its epochs were chosen by this run
        result["training"].update(refit_on="train+valid", n_train_valid_events=int(split.train_valid_lengths.sum()),
                                  selection={**model.refit_of_, "wall_seconds": selection_seconds})
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    if config.recommendations:
        write_recommendations(model, "all", config.rec_k, config.filter_seen, config.recommendations)
    return model, result


def evaluate_run(run_dir, config: RunConfig | None = None, model: SequentialRecommender | None = None,
                 **overrides) -> dict:
    """Evaluate a run directory's model on its test split (options default to the run's own)."""
    run_dir = Path(run_dir)
    saved = json.loads((run_dir / "config.json").read_text())
    if config is None:
        config = RunConfig.from_dict({**saved.get("run", {}), **overrides})
    model = model or load(run_dir)
    split_file = run_dir / "split.npz"
    if not split_file.is_file():
        raise DataError(f"{run_dir}: no split.npz; this run directory holds no test split to evaluate")
    with np.load(split_file, allow_pickle=False) as data:
        test = EvalSet(model.histories_, data["test_users"], data["test_cuts"], "test")
    return evaluate(model, test, k=config.k, protocol=config.protocol, exclude_seen=config.filter_seen,
                    tie_policy=config.tie_policy, n_negatives=config.eval_negatives, sampling=config.sampling,
                    seed=config.seed, split=saved.get("split"))


def write_recommendations(model: SequentialRecommender, users, k: int, exclude_seen: bool, path) -> Path:
    path = Path(path)
    frame = model.recommend_users(users, k=k, exclude_seen=exclude_seen)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in {".parquet", ".pq"}:
        frame.to_parquet(path, index=False)
    elif path.suffix.lower() in {".csv", ".gz"} or path.name.endswith(".csv.gz"):
        frame.to_csv(path, index=False)
    else:
        raise ConfigError(f"unknown output type {path.suffix!r} for {path}; "
                          "choose from ['.csv', '.csv.gz', '.parquet']")
    log.info("wrote %d recommendations for %d users to %s", len(frame), frame["user_id"].nunique(), path)
    return path

