"""Shared fixtures and assert helpers. Tests use tiny synthetic data, or the shared datasets read in place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import seqrec

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def cyclic_frame(n_users: int = 256, n_items: int = 50, length: int = 12, seed: int = 0,
                 string_ids: bool = False) -> pd.DataFrame:
    """Every user walks the item cycle 1, 2, ..., n_items, 1, ... from a random start: next = i + 1."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_items, n_users)
    items = (starts[:, None] + np.arange(length)[None, :]) % n_items + 1
    frame = pd.DataFrame({"user_id": np.repeat(np.arange(n_users), length), "item_id": items.reshape(-1),
                          "timestamp": np.tile(np.arange(length), n_users) + 1_000})
    if string_ids:
        frame["user_id"] = "u" + frame["user_id"].astype(str)
        frame["item_id"] = "sku" + frame["item_id"].astype(str)
    return frame


@pytest.fixture
def cyclic() -> pd.DataFrame:
    return cyclic_frame()


def tiny_sasrec(**overrides) -> seqrec.SASRec:
    params = dict(loss="ce", max_len=10, dim=32, n_heads=1, n_blocks=2, dropout=0.1, lr=1e-2, batch_size=64,
                  epochs=12, patience=12, seed=0, progress=False)
    params.update(overrides)
    return seqrec.SASRec(**params)


def assert_valid_topk(items: np.ndarray, scores: np.ndarray, k: int) -> None:
    assert items.shape == scores.shape and items.shape[1] == k
    assert np.all(np.diff(scores, axis=1) <= 0), "scores must be sorted best first"
