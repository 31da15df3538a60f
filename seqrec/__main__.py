"""``python -m seqrec`` (how ``torchrun`` starts each training process) is the ``seqrec`` command."""

import sys

from seqrec.cli import main

sys.exit(main())
