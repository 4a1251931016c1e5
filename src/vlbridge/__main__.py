"""``python -m vlbridge …`` (and ``torchrun -m vlbridge train …``): the same CLI as the ``vlbridge`` command."""
import sys

from .cli.main import main

sys.exit(main())
