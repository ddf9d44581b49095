"""Point generated protobuf imports at pep._proto, so they never shadow the pep package
or other installed copies of the same protos (pep.v1, the vendored Envoy API and
google.rpc; google.protobuf's well-known types stay where protobuf installs them)."""

import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1])
_IMPORT = re.compile(r"^from (pep\.v1|envoy(?:\.\w+)*|google\.rpc) import ", re.M)
for path in root.rglob("*.py"):
    text = path.read_text()
    fixed = _IMPORT.sub(lambda m: f"from pep._proto.{m.group(1)} import ", text)
    if fixed != text:
        path.write_text(fixed)
for pkg in [root, *(p for p in root.rglob("*") if p.is_dir() and p.name != "__pycache__")]:
    init = pkg / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated code; regenerate with `make proto`, never edit."""\n' if pkg == root else "")
