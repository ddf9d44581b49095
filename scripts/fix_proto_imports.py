"""Point generated protobuf imports at pep._proto, so they never shadow the pep package."""

import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1])
for path in root.rglob("*.py"):
    text = path.read_text()
    fixed = re.sub(r"^from pep\.v1 import ", "from pep._proto.pep.v1 import ", text, flags=re.M)
    if fixed != text:
        path.write_text(fixed)
for pkg in (root, root / "pep", root / "pep" / "v1"):
    init = pkg / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated code; regenerate with `make proto`, never edit."""\n' if pkg == root else "")
