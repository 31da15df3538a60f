"""Estimators: the contract (:mod:`seqrec.models.base`), one file per model, and the registry.

Adding a model is one new file here (and one in ``seqrec/nn`` if it has a network) plus one line in
:data:`MODELS`; its options, CLI flags, config keys, help and persistence follow from its declaration.
"""

from __future__ import annotations

from seqrec import rundir
from seqrec.errors import choose
from seqrec.models.base import DEVICES, NeuralRecommender, Recommender, SequentialRecommender, UserRecommender
from seqrec.models.bert4rec import BERT4Rec
from seqrec.models.caser import Caser
from seqrec.models.factorization import BPRMF, NCF
from seqrec.models.gru4rec import BATCHINGS, GRU4Rec, GRU4RecPlus
from seqrec.models.markov import FMC, FPMC, TransRec
from seqrec.models.poprec import PopRec
from seqrec.models.sasrec import SASRec

MODELS: dict[str, type[Recommender]] = {cls.name: cls for cls in (
    SASRec, BERT4Rec, GRU4Rec, GRU4RecPlus, PopRec, BPRMF, NCF, FMC, FPMC, TransRec, Caser)}

__all__ = ["MODELS", "DEVICES", "BATCHINGS", "Recommender", "NeuralRecommender", "SequentialRecommender",
           "UserRecommender", "SASRec", "BERT4Rec", "GRU4Rec", "GRU4RecPlus", "PopRec", "BPRMF", "NCF", "FMC", "FPMC",
           "TransRec", "Caser", "model_class", "build", "load"]


def model_class(name: str) -> type[Recommender]:
    """The registered model ``name``; a ConfigError lists the valid names."""
    return MODELS[choose("model", name, MODELS)]


def build(name: str, params: dict | None = None) -> Recommender:
    """The model ``name`` with ``params`` (unknown options fail, listing the model's valid ones; values are
    checked when it is fitted or loaded)."""
    cls = model_class(name)
    params = dict(params or {})
    cls.check_names(params)
    return cls(**params)


def load(directory, device: str | None = None) -> Recommender:
    """The model saved in a run directory by ``model.save`` or ``seqrec train``, whichever model it is
    (validated: a missing, truncated or modified file is a DataError naming it; nothing is unpickled).
    ``device`` overrides the saved one."""
    return rundir.load(directory, MODELS, device)
