"""Shared fixtures and assert helpers. Tests use tiny synthetic data, or the shared datasets read in place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import seqrec

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """A shared dataset's interactions file; the test is skipped, saying why, when ../shared is absent."""
    path = SHARED / name / "interactions.csv.gz"
    if not path.is_file():
        pytest.skip(f"needs the shared dataset {name} at {path} (../shared beside the checkout)")
    return path


def cyclic_frame(n_users: int = 256, n_items: int = 50, length: int = 12, seed: int = 0,
                 string_ids: bool = False, min_length: int | None = None) -> pd.DataFrame:
    """Every user walks the item cycle 1, 2, ..., n_items, 1, ... from a random start: next = i + 1.

    Every user has ``length`` events, or a random number in [min_length, length] if ``min_length`` is set.
    """
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_items, n_users)
    items = (starts[:, None] + np.arange(length)[None, :]) % n_items + 1
    lengths = np.full(n_users, length) if min_length is None else rng.integers(min_length, length + 1, n_users)
    keep = np.arange(length)[None, :] < lengths[:, None]
    frame = pd.DataFrame({"user_id": np.repeat(np.arange(n_users), lengths), "item_id": items[keep],
                          "timestamp": np.broadcast_to(np.arange(length), items.shape)[keep] + 1_000})
    if string_ids:
        frame["user_id"] = "u" + frame["user_id"].astype(str)
        frame["item_id"] = "sku" + frame["item_id"].astype(str)
    return frame


@pytest.fixture
def cyclic() -> pd.DataFrame:
    return cyclic_frame()


@pytest.fixture(scope="session")
def cyclic_split():
    log = seqrec.read_interactions(cyclic_frame(n_users=1024, length=14, min_length=4))  # varied lengths
    return seqrec.leave_one_out(log)


def tiny_sasrec(**overrides) -> seqrec.SASRec:
    params = dict(loss="ce", max_len=10, dim=32, n_heads=1, n_blocks=2, dropout=0.1, lr=1e-2, batch_size=64,
                  epochs=12, patience=12, seed=0, progress=False)
    params.update(overrides)
    return seqrec.SASRec(**params)


def tiny_bert4rec(**overrides) -> seqrec.BERT4Rec:
    params = dict(loss="ce", max_len=10, dim=32, n_heads=2, n_blocks=2, dropout=0.0, mask_prob=0.5, lr=5e-3,
                  batch_size=32, epochs=30, patience=30, seed=0, progress=False)
    params.update(overrides)
    return seqrec.BERT4Rec(**params)


def tiny_gru4rec(**overrides) -> seqrec.GRU4Rec:
    params = dict(loss="ce", dim=32, n_negatives=16, batch_size=32, max_len=10, epochs=3, patience=3, seed=0,
                  progress=False)
    params.update(overrides)
    return seqrec.GRU4Rec(**params)


def assert_valid_topk(items: np.ndarray, scores: np.ndarray, k: int) -> None:
    assert items.shape == scores.shape and items.shape[1] == k
    assert np.all(np.diff(scores, axis=1) <= 0), "scores must be sorted best first"


def tiny_baseline(name: str, **overrides) -> seqrec.Recommender:
    """A small instance of a baseline (seqrec.MODELS name) that learns the cyclic data in seconds."""
    cls = seqrec.MODELS[name]
    if name == "poprec":
        return cls(**overrides)
    params = dict(dim=16, lr=1e-2, batch_size=256, epochs=8, patience=8, seed=0, progress=False)
    if name == "caser":
        params.update(dim=16, length=3, n_targets=2, dropout=0.2, n_negatives=10, lr=1e-2, batch_size=128, epochs=15, patience=15)
    if name == "ncf":
        params.update(dim=8, n_layers=2)
    params.update(overrides)
    return cls(**params)
