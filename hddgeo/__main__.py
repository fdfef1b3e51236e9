"""``python -m hddgeo`` = the ``hddgeo`` command (also what ``torchrun -m hddgeo`` runs)."""
import sys

from .cli import main

sys.exit(main())
