"""``python -m edge_squeeze.cli``: what torchrun runs on every process."""

import sys

from . import main

sys.exit(main())
