"""Vectorised views of CSR sequences: left-padded windows and flattened ranges."""

from __future__ import annotations

import numpy as np

from seqrec.ids import PAD


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for every (s, n), without a Python loop."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    before = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.repeat(starts - before, lengths) + np.arange(lengths.sum())


def windows(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """[R, length] int64: the last ``length`` items of ``items[starts[r]:ends[r]]``, left-padded with PAD."""
    starts = np.asarray(starts, dtype=np.int64)[:, None]
    ends = np.asarray(ends, dtype=np.int64)[:, None]
    index = ends - length + np.arange(length)[None, :]  # [R, length]
    valid = index >= starts
    if len(items) == 0:  # only empty histories
        return np.full(index.shape, PAD, dtype=np.int64)
    return np.where(valid, items[np.where(valid, index, 0)], PAD).astype(np.int64)
