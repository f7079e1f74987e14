"""docs/configuration.md is generated from the settings classes and must be current."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docs" / "gen_config.py"


def gen_config() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_config", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_configuration_doc_is_current() -> None:
    text = gen_config().render()
    assert (REPO / "docs" / "configuration.md").read_text() == text, (
        "docs/configuration.md is stale: run `python docs/gen_config.py`")


def test_check_mode_reports_staleness(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is current" in r.stdout


def test_every_settings_class_is_documented() -> None:
    """A new BaseSettings subclass (direct, or through another settings class such as
    CommonSettings) in server/, executor/ or agents/ must be in SOURCES."""
    classes = []
    for pkg in ("server", "executor", "agents"):
        for path in (REPO / pkg).rglob("*.py"):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef):
                    bases = {getattr(b, "id", getattr(b, "attr", None)) for b in node.bases}
                    classes.append((module, node.name, bases))
    settings_names, found = {"BaseSettings"}, set()
    while True:  # settings classes, and classes derived from them, to a fixed point
        more = {(m, n) for m, n, bases in classes if bases & settings_names} - found
        if not more:
            break
        found |= more
        settings_names |= {n for _, n in more}
    documented = {(s.module, s.cls) for s in gen_config().SOURCES}
    assert found <= documented, f"add to SOURCES in docs/gen_config.py: {found - documented}"
    text = (REPO / "docs" / "configuration.md").read_text()
    for module, cls in found:
        assert f"`{cls}`" in text
        mod = __import__(module, fromlist=[cls])
        for name in getattr(mod, cls).model_fields:
            assert f"`AIRLOCK_{name.upper()}`" in text
