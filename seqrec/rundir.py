"""The run directory: the only code that writes or reads one.

::

    RUN_DIR/config.json          format, model name + options, n_items, seqrec version, what the run was
                                 (data, split, filters, run options), and the size and sha256 of every file below
    RUN_DIR/vocab_users.parquet  external user ids in internal order
    RUN_DIR/vocab_items.parquet  external item ids in internal order
    RUN_DIR/weights.safetensors  the model's tensors (never unpickled)
    RUN_DIR/histories.npz        the known users' histories (recommend_users)
    RUN_DIR/training.json        per-epoch loss, validation metrics and seconds; the best epoch
    RUN_DIR/split.npz            (a run) the encoded log the split was cut from, and its cut points
    RUN_DIR/metrics.json         (a run) test metrics with their protocol card

Saving is atomic: everything is written to a staging folder beside RUN_DIR, which then takes RUN_DIR's
place in one exchange (Linux ``renameat2``; elsewhere two renames), so an interrupted save leaves the
previous run whole. Files a user put in RUN_DIR are carried over. Loading checks every file against
config.json: a missing, truncated, modified or unreadable file is a :class:`~seqrec.errors.DataError`
naming it, never a traceback or an unpickled object.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from seqrec.data.interactions import Interactions
from seqrec.data.splits import EvalSet, Split
from seqrec.data.vocab import Vocab
from seqrec.errors import DataError
from seqrec.train import TrainResult
from seqrec.version import __version__

FORMAT = 1
CONFIG = "config.json"
OWNED = {CONFIG, "vocab_users.parquet", "vocab_items.parquet", "weights.safetensors", "histories.npz",
         "training.json", "split.npz", "metrics.json"}


# ---- writing -------------------------------------------------------------------------------------
def save(model, directory, *, split: Split | None = None, run: dict | None = None) -> Path:
    """Write ``model`` (and, for a run, its ``split`` and ``run`` description) to ``directory`` atomically."""
    model._check_fitted()
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.saving-", dir=directory.parent))
    try:
        model.vocab_.save(staging)
        save_file(model.state(), str(staging / "weights.safetensors"))
        _save_log(staging / "histories.npz", model.histories_)
        result = getattr(model, "train_result_", None)
        if result is not None:
            (staging / "training.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        if split is not None:
            _save_log(staging / "split.npz", split.log, train_lengths=split.train_lengths,
                      train_valid_lengths=split.train_valid_lengths, valid_users=split.valid.users,
                      valid_cuts=split.valid.cuts, test_users=split.test.users, test_cuts=split.test.cuts,
                      exclude_seen=np.array(split.test.exclude_seen),
                      candidates=np.array([], dtype=np.int64) if split.test.candidates is None
                      else split.test.candidates)
        files = {p.name: _digest(p) for p in sorted(staging.iterdir())}
        config = {"format": FORMAT, "model": model.name, "params": model.get_params(),
                  "n_items": model.vocab_.n_items, "seqrec_version": __version__, **(run or {}),
                  "has_split": split is not None, "files": files}
        (staging / CONFIG).write_text(json.dumps(config, indent=2, default=str) + "\n")
        if directory.is_dir():
            for path in directory.iterdir():  # the user's own files stay with the run
                if path.name not in OWNED and not (staging / path.name).exists():
                    (shutil.copytree if path.is_dir() else shutil.copy2)(path, staging / path.name)
        _swap(staging, directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return directory


def write_json(directory, name: str, data: dict) -> Path:
    """Write ``data`` to ``directory/name`` atomically (temporary file + rename)."""
    path = Path(directory) / name
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=path.parent)
    with os.fdopen(handle, "w") as file:
        file.write(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(temporary, path)
    return path


def _save_log(path: Path, log: Interactions, **arrays) -> None:
    np.savez(path, offsets=log.offsets, items=log.items, times=np.asarray(log.times), **arrays)


def _digest(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _swap(staging: Path, directory: Path) -> None:
    """Put ``staging`` in ``directory``'s place; the previous ``directory`` ends in ``staging``."""
    if not directory.exists():
        os.rename(staging, directory)
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        at_fdcwd, rename_exchange = -100, 2
        if libc.renameat2(at_fdcwd, os.fsencode(staging), at_fdcwd, os.fsencode(directory), rename_exchange) == 0:
            return
    except (AttributeError, OSError):
        pass
    old = staging.with_name(staging.name + ".old")
    os.rename(directory, old)
    os.rename(staging, directory)
    os.rename(old, staging)


# ---- reading -------------------------------------------------------------------------------------
def read_config(directory, models: dict | None = None) -> dict:
    """config.json of a run directory, checked for the fields every reader needs (and, given the model
    registry ``models``, that its model is one of them)."""
    directory = Path(directory)
    path = directory / CONFIG
    if not directory.is_dir():
        raise DataError(f"{directory}: no such run directory")
    if not path.is_file():
        raise DataError(f"{directory}: not a run directory (no {CONFIG})")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise DataError(f"{path}: run directory format {found!r}, this seqrec reads format {FORMAT} "
                        "(written by another version: train the run again)")
    for key in ("model", "params", "files"):
        if key not in config:
            raise DataError(f"{path}: no {key!r} field")
    if models is not None and config["model"] not in models:
        raise DataError(f"{path}: holds a {config['model']!r} model, not one of {list(models)}")
    return config


def _checked(directory: Path, config: dict, name: str, parse):
    """``parse(bytes)`` of ``directory/name``, read once, after checking its size and sha256 against
    config.json; a parser's error names the file."""
    path = directory / name
    expected = config["files"].get(name)
    if expected is None:
        raise DataError(f"{path}: not recorded in {CONFIG}")
    if not path.is_file():
        raise DataError(f"{path}: missing")
    data = path.read_bytes()
    if len(data) != expected["bytes"]:
        raise DataError(f"{path}: truncated or modified ({len(data)} bytes, {expected['bytes']} when saved)")
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise DataError(f"{path}: modified since it was saved (its sha256 differs from {CONFIG})")
    try:
        return parse(data)
    except DataError:
        raise
    except Exception as exc:  # any parser's error: the file is named, no traceback
        raise DataError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None


def _read_log(directory: Path, config: dict, name: str, vocab: Vocab) -> tuple[Interactions, dict]:
    """The encoded log of ``name`` (an .npz written by :func:`_save_log`) and its other arrays."""
    path = directory / name

    def parse(data: bytes):
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        log = Interactions(vocab, arrays.pop("offsets"), arrays.pop("items"), arrays.pop("times"), source=str(path))
        if log.offsets[-1] != len(log.items) or (len(log.items) and (log.items.min() < 1 or
                                                                      log.items.max() > vocab.n_items)):
            raise DataError(f"{path}: inconsistent with the vocabulary")
        return log, arrays

    return _checked(directory, config, name, parse)


def load(directory, models: dict, device: str | None = None):
    """The model saved in a run directory (validated; see the module docstring), built from the registry
    ``models`` (name -> class). ``device`` overrides the saved one; a model trained on a GPU loads on the CPU
    where CUDA is not available."""
    directory = Path(directory)
    config = read_config(directory, models)
    params = dict(config["params"])
    cls = models[config["model"]]
    try:
        cls.check_names(params)
    except Exception as exc:
        raise DataError(f"{directory / CONFIG}: {exc}") from None
    saved_device = str(params.get("device", "cpu"))
    if device is None and saved_device.startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"
    if device is not None and "device" in params:
        params["device"] = device
    model = cls(**params)
    vocab = _read_vocab(directory, config)
    histories, _ = _read_log(directory, config, "histories.npz", vocab)
    state = _checked(directory, config, "weights.safetensors", load_safetensors)
    result = None
    if "training.json" in config["files"]:
        result = _checked(directory, config, "training.json", lambda data: TrainResult.from_dict(json.loads(data)))
    try:
        return model.restore(vocab, histories, state, result)
    except DataError:
        raise
    except (RuntimeError, KeyError, ValueError) as exc:
        raise DataError(f"{directory / 'weights.safetensors'}: does not fit the saved {config['model']} "
                        f"options ({str(exc).splitlines()[0]})") from None


def _read_vocab(directory: Path, config: dict) -> Vocab:
    users = _checked(directory, config, "vocab_users.parquet",
                     lambda data: pd.read_parquet(io.BytesIO(data))["user_id"].to_numpy())
    items = _checked(directory, config, "vocab_items.parquet",
                     lambda data: pd.read_parquet(io.BytesIO(data))["item_id"].to_numpy())
    if config.get("n_items") is not None and len(items) != config["n_items"]:
        raise DataError(f"{directory / 'vocab_items.parquet'}: {len(items)} items, config.json says {config['n_items']}")
    return Vocab(users=users, items=items)


def read_metrics(directory) -> dict | None:
    """metrics.json of a run (test metrics with their protocol card), None for a model saved alone."""
    path = Path(directory) / "metrics.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def load_split(directory, vocab: Vocab) -> Split:
    """The split a run was trained and tested on (its own copy of the log, independent of the model's
    known histories)."""
    directory = Path(directory)
    config = read_config(directory)
    if not config.get("has_split"):
        raise DataError(f"{directory}: holds no split (a model saved alone); nothing to evaluate on")
    log, a = _read_log(directory, config, "split.npz", vocab)
    try:
        candidates = a["candidates"] if len(a["candidates"]) else None
        exclude_seen = bool(a["exclude_seen"])
        valid = EvalSet(log, a["valid_users"], a["valid_cuts"], "valid", exclude_seen, candidates)
        test = EvalSet(log, a["test_users"], a["test_cuts"], "test", exclude_seen, candidates)
        card = config.get("split", {})
        return Split(log, a["train_lengths"], valid, test, card.get("kind", "?"),
                     {k: v for k, v in card.items() if k != "kind"}, a["train_valid_lengths"])
    except KeyError as exc:
        raise DataError(f"{directory / 'split.npz'}: no array {exc}") from None
