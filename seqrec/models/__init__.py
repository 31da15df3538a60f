"""Estimators: one file per model over a shared base (:mod:`seqrec.models.base`), and :func:`load`."""

from __future__ import annotations

import json
from pathlib import Path

from seqrec.errors import DataError, choose
from seqrec.models.base import DEVICES, SequentialRecommender
from seqrec.models.bert4rec import BERT4Rec
from seqrec.models.gru4rec import BATCHINGS, GRU4Rec, GRU4RecPlus, right_align
from seqrec.models.sasrec import SASRec

MODELS = {"sasrec": SASRec, "bert4rec": BERT4Rec, "gru4rec": GRU4Rec, "gru4rec+": GRU4RecPlus}

__all__ = ["MODELS", "DEVICES", "BATCHINGS", "SequentialRecommender", "SASRec", "BERT4Rec", "GRU4Rec",
           "GRU4RecPlus", "right_align", "load"]


def load(directory, device: str | None = None) -> SequentialRecommender:
    """Load a model saved by :meth:`SequentialRecommender.save` (no pickled objects are read)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise DataError(f"{directory}: not a run directory (no config.json)")
    config = json.loads(config_path.read_text())
    cls = MODELS[choose("model", config["model"], MODELS)]
    return cls._load(directory, config, device)
