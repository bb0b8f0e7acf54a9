"""``python -m hmu_diag`` = the ``hmu-diag`` command."""
import sys

from .cli import main

sys.exit(main())
