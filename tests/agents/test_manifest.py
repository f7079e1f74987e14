"""Manifest validation: every problem names the offending field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.manifest import (
    Manifest,
    ManifestError,
    Risk,
    load_manifest,
    load_manifest_text,
    parse_manifest,
)

GOOD: dict[str, Any] = {
    "name": "echo",
    "version": "1.2.0-rc.1",
    "description": "says it back",
    "image": "localhost/airlock/echo:1",
    "risk": "medium",
    "permissions": {"network": True, "secrets": ["API_TOKEN"]},
    "limits": {
        "default": {"memory_mib": 128, "timeout_seconds": 10},
        "max": {"memory_mib": 512, "timeout_seconds": 60},
    },
    "capabilities": [{"name": "echo", "input_schema": {"type": "object"}, "output_schema": {"type": "object"}}],
}


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


DEEP = nested(300)  # deeper than the meta-schema check could recurse


def with_(path: str, value: Any) -> dict[str, Any]:
    """GOOD with ``path`` (dotted; list indexes as numbers) set, or removed for ``...``."""
    doc = yaml.safe_load(yaml.safe_dump(GOOD))
    *parents, last = path.split(".")
    node: Any = doc
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    key: Any = int(last) if isinstance(node, list) else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return doc


def test_good_manifest() -> None:
    m = parse_manifest(GOOD)
    assert isinstance(m, Manifest)
    assert (m.name, m.version, m.risk) == ("echo", "1.2.0-rc.1", Risk.MEDIUM)
    assert m.permissions.secrets == ("API_TOKEN",) and m.permissions.network
    assert m.capability("echo") is not None and m.capability("nope") is None
    assert m.to_json()["risk"] == "medium"
    assert parse_manifest(m.to_json()) == m  # round-trips


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (with_("name", "Echo"), "name"),
        (with_("name", "-echo"), "name"),
        (with_("name", "e" * 64), "name"),
        (with_("name", ...), "name"),
        (with_("version", "1.0"), "version"),
        (with_("version", "01.0.0"), "version"),
        (with_("version", 1), "version"),
        (with_("risk", "extreme"), "risk"),
        (with_("description", "x" * 4001), "description"),
        (with_("image", ""), "image"),
        (with_("image", "img\x00"), "image"),
        (with_("description", "a\x00b"), "description"),
        (with_("colour", "blue"), "colour"),
        (with_("permissions.network", "sometimes"), "permissions.network"),
        (with_("permissions.secrets", ["api_token"]), "permissions.secrets"),
        (with_("permissions.secrets", ["API\n"]), "permissions.secrets"),
        (with_("permissions.secrets", ["A", "A"]), "permissions.secrets"),
        (with_("permissions.admin", True), "permissions.admin"),
        (with_("limits.default.memory_mib", 8), "limits.default.memory_mib"),
        (with_("limits.max.timeout_seconds", 0), "limits.max.timeout_seconds"),
        (with_("limits.max.cpus", 100), "limits.max.cpus"),
        (with_("limits.default.memory_mib", 1024), "limits.default.memory_mib"),  # above max
        (with_("limits.default.gpus", 1), "limits.default.gpus"),
        (with_("capabilities", []), "capabilities"),
        (with_("capabilities", ...), "capabilities"),
        (with_("capabilities.0.name", "Echo"), "capabilities.0.name"),
        (with_("capabilities.0.input_schema", {"type": 5}), "capabilities.0.input_schema"),
        (with_("capabilities.0.output_schema", "object"), "capabilities.0.output_schema"),
        (with_("capabilities.0.input_schema", {"title": "a\x00"}), "capabilities.0.input_schema"),
        (with_("capabilities.0.output_schema", ...), "capabilities.0.output_schema"),
        (with_("capabilities", GOOD["capabilities"] * 2), "capabilities"),
        (with_("entrypoint", ["run", "\x00"]), "entrypoint"),
        (with_("capabilities.0.input_schema", DEEP), "capabilities.0.input_schema"),
    ],
)
def test_errors_name_the_field(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(doc)
    err = info.value
    assert err.field == field, (err.field, err.message)
    assert str(err) == f"{field}: {err.message}"
    assert err.message and "Value error" not in err.message


def test_image_or_build_required() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(with_("image", ...))
    assert info.value.field == "" and "'image' or 'build'" in info.value.message
    m = parse_manifest({**with_("image", ...), "build": {"context": "."}})
    assert m.image is None and m.build is not None


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text", "a: [", "name: [unclosed", "[" * 5000, "9" * 5000])
def test_not_a_manifest_document(text: str) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest_text(text)
    assert info.value.field == ""
    assert any(w in info.value.message for w in ("mapping", "YAML", "nested too deeply"))


def test_load_from_folder_and_file(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(GOOD))
    assert load_manifest(tmp_path).name == "echo"
    assert load_manifest(tmp_path / "agent.yaml").version == "1.2.0-rc.1"
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(with_("risk", "none")))
    with pytest.raises(ManifestError, match=r"^risk: "):
        load_manifest(tmp_path)


def test_sample_agents_are_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    found = sorted(root.glob("sample_agents/*/agent.yaml")) + sorted(root.glob("tests/agents/*/agent.yaml"))
    for path in found:
        assert load_manifest(path).name, path


def test_schema_depth_limit() -> None:
    assert parse_manifest(with_("capabilities.0.input_schema", nested(31))).name == "echo"
    with pytest.raises(ManifestError, match="nested deeper than"):
        parse_manifest(with_("capabilities.0.input_schema", nested(32)))
