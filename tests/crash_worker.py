"""A training process that fails on purpose (started by tests/test_distributed.py through torchrun):
``seqrec train`` whose process 1 raises at its third training step, while process 0 waits for it in the
gradient all-reduce."""

import os
import sys

import seqrec
from seqrec.cli import main

original = seqrec.SASRec._batch_loss
steps = []


def failing(self, batch, generator):
    steps.append(1)
    if os.environ.get("RANK") == "1" and len(steps) == 3:
        raise RuntimeError("injected failure in process 1")
    return original(self, batch, generator)


seqrec.SASRec._batch_loss = failing
sys.exit(main(sys.argv[1:]))
