"""What every `pep` subcommand shares: exit codes and the development issuer."""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_DEV_DIR = ".pep/dev"
DEV_ISSUER = "https://dev.pep.local"
DEV_AUDIENCE = "pep"
