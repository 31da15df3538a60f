"""seqrec: sequential recommendation — faithful models, honest evaluation.

    import seqrec
    log = seqrec.read_interactions("log.parquet", user="uid", item="sku", time="ts")
    split = seqrec.leave_one_out(log)
    model = seqrec.SASRec(loss="ce", max_len=50).fit(split.train, valid=split.valid)
    print(seqrec.evaluate(model, split.test, k=(10, 20)))
    items, scores = model.recommend([["sku1", "sku7"]], k=10)
    model.save("runs/x"); model = seqrec.load("runs/x")
    seqrec.analyze("log.parquet").write("audit/")   # does it look sequential?
    seqrec.tune(data="log.csv", model="sasrec", budget="2h", out="runs/tuned")   # search, then refit
"""

from seqrec.data import (EvalSet, Histories, Interactions, Split, Vocab, leave_one_out, read_interactions,
                         session_split, temporal_split)
from seqrec.errors import ConfigError, DataError, NotFittedError, SeqrecError
from seqrec.evaluate import evaluate, perturbation_test
from seqrec.models import (BPRMF, FMC, FPMC, MODELS, NCF, BERT4Rec, Caser, GRU4Rec, GRU4RecPlus, PopRec, Recommender,
                           SASRec, TransRec, build, load)
from seqrec.version import __version__
from seqrec.analysis import Audit, AuditOptions, analyze  # noqa: E402  (the audit trains models: import last)


def tune(**options) -> dict:
    """Search a model's options within a time budget, refit the best, save the run directory and a report
    (``seqrec tune``; see :func:`seqrec.tuning.tune`)."""
    from seqrec.tuning import tune as search  # Optuna is imported only by a search

    return search(**options)


__all__ = ["read_interactions", "leave_one_out", "temporal_split", "session_split", "Interactions", "EvalSet",
           "Histories", "Split", "Vocab", "MODELS", "Recommender", "SASRec", "BERT4Rec", "GRU4Rec", "GRU4RecPlus",
           "PopRec", "BPRMF", "NCF", "FMC", "FPMC", "TransRec", "Caser", "build", "load", "evaluate", "perturbation_test", "analyze", "tune", "Audit", "AuditOptions", "SeqrecError",
           "DataError", "ConfigError", "NotFittedError", "__version__"]
