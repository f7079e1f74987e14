"""The runtime registry: one table of names, each runtime's own settings, no other list.

A new runtime is one module plus one line in ``RUNTIMES``: shown with the test double in
``tests/helpers/fake_runtime.py``, registered with one ``setitem`` and then reached by every
path that takes a runtime name (settings, CLI choices, ``resolve_runtime``, an executor).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest

from airlock.cli import build_parser
from airlock.v1 import run_pb2
from airlock.v1 import run_service_pb2 as rs
from executor.runtime import registry
from executor.runtime.base import RuntimeUnavailable, SandboxRuntime
from executor.runtime.podman import PodmanSettings
from executor.runtime.registry import AUTO_ORDER, RUNTIMES, resolve_runtime, runtime_names
from executor.settings import ExecutorSettings
from executor.worker import Executor
from tests.conftest import manifest_text, start_plane
from tests.helpers.api import get_run, register, submit
from tests.helpers.db import SqliteTemplates
from tests.helpers.fake_runtime import FAKE_FACTORY_PATH, FAKE_NAME, FakeRuntime
from tests.helpers.wait import assert_eventually


@pytest.fixture
def fake_registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(RUNTIMES, FAKE_NAME, FAKE_FACTORY_PATH)  # the one registry line
    yield


def _choices(argv: list[str], option: str) -> tuple[str, ...]:
    """The ``choices`` of ``option`` in the parser of ``airlock <argv...>``."""
    parser: argparse.ArgumentParser = build_parser()
    for name in argv:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    action = next(a for a in parser._actions if option in a.option_strings)
    assert action.choices is not None
    return tuple(action.choices)


def test_names_come_from_the_one_table() -> None:
    assert runtime_names() == ("auto", *RUNTIMES)
    assert set(AUTO_ORDER) <= set(RUNTIMES)
    # a reachable engine, else the jail where its trial run passes, else podman
    assert AUTO_ORDER == ("dagger", "jail", "podman")
    assert _choices(["executor"], "--runtime") == runtime_names()
    assert _choices(["agent", "run-local"], "--runtime") == runtime_names()
    with pytest.raises(pydantic.ValidationError, match="unknown sandbox runtime 'fake'"):
        ExecutorSettings(runtime=FAKE_NAME)


async def test_unknown_name_is_refused_before_anything_is_imported() -> None:
    with pytest.raises(ValueError, match="unknown sandbox runtime 'docker'; expected one of auto"):
        await resolve_runtime("docker")


def test_each_runtime_takes_its_options_from_the_executor_settings(tmp_path: Path) -> None:
    settings = ExecutorSettings(podman_work_root=tmp_path, executor_id="ex-1",
                                podman_probe_image="localhost/probe:1")
    podman = PodmanSettings.model_validate(settings.model_dump())
    assert (podman.work_root, podman.executor_id, podman.probe_image) == (
        tmp_path, "ex-1", "localhost/probe:1")


@pytest.mark.usefixtures("fake_registered")
async def test_one_line_registers_a_runtime_for_settings_cli_and_factory() -> None:
    settings = ExecutorSettings(runtime=FAKE_NAME, executor_id="ex-fake")
    assert FAKE_NAME in _choices(["executor"], "--runtime")
    runtime = await resolve_runtime(settings.runtime, **settings.model_dump())
    assert isinstance(runtime, FakeRuntime) and isinstance(runtime, SandboxRuntime)
    assert runtime.settings.executor_id == "ex-fake"  # its settings were built from ExecutorSettings
    with pytest.raises(RuntimeUnavailable, match="fake runtime: configured unusable"):
        await resolve_runtime(FAKE_NAME, fake_usable=False)
    with pytest.raises(ValueError, match="fake_usable"):  # a malformed option names itself
        await resolve_runtime(FAKE_NAME, fake_usable="sometimes")


@pytest.mark.usefixtures("fake_registered")
async def test_auto_follows_the_preference_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "AUTO_ORDER", (FAKE_NAME,))
    assert isinstance(await resolve_runtime("auto"), FakeRuntime)
    with pytest.raises(RuntimeUnavailable,
                       match="no sandbox runtime usable: fake runtime: configured unusable"):
        await resolve_runtime("auto", fake_usable=False)


async def test_a_runtime_whose_module_is_broken_is_unavailable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RUNTIMES, "broken", "tests.helpers.no_such_runtime:FACTORY")
    with pytest.raises(RuntimeUnavailable, match="broken runtime: cannot import it"):
        await resolve_runtime("broken")


@pytest.mark.usefixtures("fake_registered")
async def test_a_run_executes_end_to_end_on_the_registered_double(
        sqlite_templates: SqliteTemplates) -> None:
    url = sqlite_templates.fresh()
    plane = await start_plane(url)
    ex: Executor | None = None
    try:
        admin = plane.admin
        await register(admin, manifest_text())
        run = (await submit(admin, text="héllo")).run
        settings = ExecutorSettings(database_url=url, runtime=FAKE_NAME, executor_id="ex-fake",
                                    poll_seconds=0.2, heartbeat_seconds=0.5)  # type: ignore[arg-type]
        runtime = await resolve_runtime(settings.runtime, **settings.model_dump())
        ex = Executor(settings, plane.cp.store, runtime)
        await ex.start()
        done = await assert_eventually(lambda: get_run(admin, run.id),
                                       lambda r: r.state == run_pb2.RUN_STATE_SUCCEEDED,
                                       what="the run SUCCEEDED")
        assert done.reason == "succeeded"
        assert isinstance(runtime, FakeRuntime)
        (spec,) = runtime.specs
        assert spec.input_json == '{"text":"héllo"}'  # the stored text, handed on as it is
        res = await admin.runs.GetRunResult(rs.GetRunResultRequest(run_id=run.id),
                                            metadata=admin.md)
        assert json.loads(res.output_json) == {"echo": {"text": "héllo"}}
    finally:
        if ex is not None:
            await ex.stop()
        await plane.close()
