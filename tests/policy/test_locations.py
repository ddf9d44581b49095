"""Problems are reported at the offending token, not at the start of the policy or file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pep.errors import PolicyLoadError
from pep.policy.loader import load_snapshot


def _problems(tmp_path: Path, files: dict[str, str]) -> list[str]:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(PolicyLoadError) as e:
        load_snapshot(str(tmp_path))
    return [str(p) for p in e.value.problems]


def test_parse_error_at_the_token(tmp_path: Path) -> None:
    text = (
        '@id("ok")\npermit(principal, action, resource);\n\n'
        '@id("bad")\npermit(principal, action, resource)\n  when { principal.x == };\n'
    )
    assert _problems(tmp_path, {"main.cedar": text}) == ["main.cedar:6:25: parse error: unexpected token `}`"]


def test_schema_parse_error_at_the_token(tmp_path: Path) -> None:
    schema = "entity User { tier: Long }\nentity Doc;\n"
    found = _problems(tmp_path, {"schema.cedarschema": schema, "main.cedar": "permit(principal, action, resource);\n"})
    assert found == ["schema.cedarschema:2:1: invalid schema: error parsing schema: unexpected token `entity`"]


def test_schema_unknown_type_at_its_name(tmp_path: Path) -> None:
    schema = "entity Doc;\nentity User { tier: Lng };\n"
    found = _problems(tmp_path, {"schema.cedarschema": schema, "main.cedar": "permit(principal, action, resource);\n"})
    assert found == ["schema.cedarschema:2:21: invalid schema: failed to resolve type: Lng"]
