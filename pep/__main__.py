"""`python -m pep`: the same command line as the `pep` script."""

import sys

from pep.cli import main

sys.exit(main())
