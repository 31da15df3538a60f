"""PopRec: the popularity baseline."""

from __future__ import annotations

import numpy as np
import torch

from seqrec.data.interactions import Interactions
from seqrec.data.sequences import Histories
from seqrec.data.splits import EvalSet
from seqrec.errors import DataError
from seqrec.ids import FIRST_ITEM
from seqrec.models.base import Recommender


class PopRec(Recommender):
    """Every history gets the items ranked by their number of training events (the same list for all;
    seen filtering and candidate items still apply per row). Ties keep their tie: evaluation resolves them
    by its tie policy, ``recommend`` by item order. No options, no training loop; ``valid`` is ignored."""

    name = "poprec"

    def fit(self, train, valid: EvalSet | None = None) -> "PopRec":
        train = self._start_fit(train)
        self.counts_ = torch.from_numpy(np.bincount(train.items - FIRST_ITEM, minlength=train.n_items)).float()
        return self

    def score(self, histories: Histories, out: torch.Tensor | None = None) -> torch.Tensor:
        self._check_fitted()
        scores = self.counts_.expand(len(histories), -1)
        return out.copy_(scores) if out is not None else scores.clone()

    def state(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        return {"counts": self.counts_}

    def restore(self, vocab, histories: Interactions, state: dict[str, torch.Tensor], train_result) -> "PopRec":
        self.validate()
        if "counts" not in state or state["counts"].shape != (vocab.n_items,):
            raise DataError(f"weights.safetensors: no popularity counts for {vocab.n_items} items")
        self.vocab_, self.histories_, self.counts_ = vocab, histories, state["counts"].float()
        return self
