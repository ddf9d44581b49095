"""`python -m pep.cli`."""

import sys

from pep.cli import main

sys.exit(main())
