"""Networks: plain torch modules with plain-scalar constructors, one protocol (:class:`SequenceNet`).
Never import data code."""

from seqrec.nn.bert4rec import BERT4RecNet
from seqrec.nn.gru4rec import GRU4RecNet
from seqrec.nn.layers import SequenceNet
from seqrec.nn.sasrec import SASRecNet

__all__ = ["SequenceNet", "SASRecNet", "BERT4RecNet", "GRU4RecNet"]
