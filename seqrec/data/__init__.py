"""Interaction log -> validated, encoded, time-ordered sequences -> splits. Never imports networks."""

from seqrec.data.interactions import Interactions, read_interactions
from seqrec.data.sequences import Histories
from seqrec.data.splits import EvalSet, Split, leave_one_out, session_split, temporal_split
from seqrec.data.vocab import Vocab

__all__ = ["Histories", "Interactions", "read_interactions", "EvalSet", "Split", "leave_one_out", "temporal_split", "session_split",
           "Vocab"]
