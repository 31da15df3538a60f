"""Networks: plain torch modules with plain-scalar constructors. Never import data code."""

from seqrec.nn.sasrec import SASRecNet

__all__ = ["SASRecNet"]
