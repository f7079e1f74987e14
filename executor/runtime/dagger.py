"""The Dagger sandbox runtime (production): one fresh exec per attempt on a Dagger engine.

Limits: Dagger's ``withExec`` has none, so every exec runs the agent under
``limits_wrapper.py`` (wall clock, address space, processes, file size, capped logs), and this
side adds an ``asyncio.timeout`` backstop in case the engine itself stalls.

Network: ``withExec`` has no switch to turn the network off. Egress is denied by where the
engine runs: on an internal-only network (docker-compose), see docs/security.md. The runtime
cannot check that, so it is told (``engine_has_egress``) and refuses runs the engine cannot
honour instead of running them with the wrong network.

Client: ``dagger.Connection(dagger.Config(retry=None))``. With the SDK's default retry policy
a request that times out is sent again (several times) and other requests on the client are
disturbed; an exec must run at most once. One connection per attempt: closing it ends the
session when the SDK started one, which is how a cancelled run's exec is torn down.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

import dagger

from executor.runtime.base import (
    RunSpec,
    RuntimeFactory,
    RuntimeSettings,
    RuntimeUnavailable,
    SandboxResult,
    Termination,
)
from executor.runtime.dagger_pipeline import (
    DEFAULT_KILL_GRACE_SECONDS,
    RESULT_PATH,
    agent_container,
    image_command,
    run_request_json,
)

ConnectFactory = Callable[[], AbstractAsyncContextManager[dagger.Client]]

PROBE_TIMEOUT_SECONDS = 1.0
DETAIL_MAX = 2000  # characters of an engine error kept in SandboxResult.detail


@dataclass(frozen=True, slots=True)
class EngineProbe:
    """Result of a quick look for an engine. ``reachable`` is None when it cannot be told
    cheaply (a runner the CLI would start or reach through docker/podman/kubernetes)."""

    reachable: bool | None
    reason: str


def find_cli() -> str | None:
    """The dagger CLI the SDK may start a session with. Never a download (see _ensure_cli)."""
    explicit = os.environ.get("_EXPERIMENTAL_DAGGER_CLI_BIN")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("dagger")


async def _can_connect(opener: Callable[[], Any], wait_seconds: float) -> bool:
    try:
        async with asyncio.timeout(wait_seconds):
            _reader, writer = await opener()
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def probe_engine(wait_seconds: float = PROBE_TIMEOUT_SECONDS) -> EngineProbe:
    """Look for a Dagger engine quickly, without starting or downloading anything.

    1. ``DAGGER_SESSION_PORT`` (we run under ``dagger run``): that session must answer on
       127.0.0.1.
    2. Otherwise the SDK starts ``dagger session`` itself, which needs the CLI; then
       ``_EXPERIMENTAL_DAGGER_RUNNER_HOST`` says where the engine is: ``tcp://`` and ``unix://``
       are probed; other schemes (docker-container://, kube-pod://, ...) cannot be probed cheaply.
    """
    port = os.environ.get("DAGGER_SESSION_PORT")
    if port:
        if not os.environ.get("DAGGER_SESSION_TOKEN"):
            return EngineProbe(False, "DAGGER_SESSION_PORT is set but DAGGER_SESSION_TOKEN is not")
        if not port.isdigit():
            return EngineProbe(False, f"DAGGER_SESSION_PORT={port!r} is not a port")
        ok = await _can_connect(
            lambda: asyncio.open_connection("127.0.0.1", int(port)), wait_seconds
        )
        answer = "answers" if ok else "does not answer"
        return EngineProbe(ok, f"session on 127.0.0.1:{port} {answer}")
    cli = find_cli()
    if cli is None:
        return EngineProbe(
            False,
            "DAGGER_SESSION_PORT is unset and no dagger CLI is on PATH or in "
            "_EXPERIMENTAL_DAGGER_CLI_BIN",
        )
    runner = os.environ.get("_EXPERIMENTAL_DAGGER_RUNNER_HOST", "")
    if not runner:
        return EngineProbe(
            None, f"{cli} found; _EXPERIMENTAL_DAGGER_RUNNER_HOST unset (the CLI would start an "
            "engine through docker)",
        )
    url = urlsplit(runner)
    if url.scheme == "tcp" and url.hostname and url.port:
        host, tport = url.hostname, url.port
        ok = await _can_connect(lambda: asyncio.open_connection(host, tport), wait_seconds)
        return EngineProbe(ok, f"runner {runner} {'answers' if ok else 'does not answer'}")
    if url.scheme == "unix":
        path = url.path or url.netloc
        ok = await _can_connect(lambda: asyncio.open_unix_connection(path), wait_seconds)
        return EngineProbe(ok, f"runner {runner} {'answers' if ok else 'does not answer'}")
    return EngineProbe(None, f"runner {runner} cannot be probed without starting a session")


async def engine_reachable() -> bool:
    """True only when an engine positively answers a quick probe (auto-detection uses this)."""
    return (await probe_engine()).reachable is True


def _ensure_cli() -> None:
    """Without a session or ``_EXPERIMENTAL_DAGGER_CLI_BIN`` the SDK (0.21.11,
    ``provisioning/_engine.py``) downloads a CLI from dl.dagger.io. Point it at the installed
    CLI instead, or refuse."""
    if os.environ.get("DAGGER_SESSION_PORT"):
        return
    cli = find_cli()
    if cli is None:
        raise RuntimeUnavailable("no Dagger session and no dagger CLI installed")
    os.environ.setdefault("_EXPERIMENTAL_DAGGER_CLI_BIN", cli)


def _digest(image_ref: str) -> str | None:
    return image_ref.split("@", 1)[1] if "@" in image_ref else None


def _first_lines(e: BaseException) -> str:
    return (str(e).strip() or type(e).__name__)[:DETAIL_MAX]


class _Outcome(Exception):
    """Carries a finished SandboxResult out of nested phases."""

    def __init__(self, result: SandboxResult) -> None:
        super().__init__(result.detail)
        self.result = result


class DaggerRuntime:
    """SandboxRuntime on a Dagger engine (see the module docstring for the why)."""

    name = "dagger"

    def __init__(
        self,
        *,
        engine_has_egress: bool = False,
        start_timeout_seconds: float = 300.0,
        backstop_grace_seconds: float = 30.0,
        kill_grace_seconds: float = DEFAULT_KILL_GRACE_SECONDS,
        cancel_wait_seconds: float = 1.0,
        check_timeout_seconds: float = 30.0,
        log_output: TextIO | None = None,
        connect: ConnectFactory | None = None,
    ) -> None:
        """``start_timeout_seconds`` bounds connecting and pulling the image;
        ``backstop_grace_seconds`` is added to the run's timeout (and the wrapper's kill grace)
        for the client-side backstop; ``connect`` replaces ``dagger.Connection`` (tests)."""
        self.engine_has_egress = engine_has_egress
        # The engine's network is fixed: this executor takes only the runs it can honour.
        self.network_pool: bool | None = engine_has_egress
        self.start_timeout_seconds = start_timeout_seconds
        self.backstop_grace_seconds = backstop_grace_seconds
        self.kill_grace_seconds = kill_grace_seconds
        self.cancel_wait_seconds = cancel_wait_seconds
        self.check_timeout_seconds = check_timeout_seconds
        self._log_output = log_output
        self._connect_factory = connect
        self._background: set[asyncio.Task[Any]] = set()  # cancelled attempts still closing

    def _connect(self) -> AbstractAsyncContextManager[dagger.Client]:
        if self._connect_factory is not None:
            return self._connect_factory()
        _ensure_cli()
        return dagger.Connection(dagger.Config(retry=None, log_output=self._log_output))

    async def check(self) -> None:
        probe = await probe_engine()
        if probe.reachable is False:
            raise RuntimeUnavailable(f"no Dagger engine reachable ({probe.reason})")
        try:  # reachable or unknown: a real session proves it
            async with asyncio.timeout(self.check_timeout_seconds), self._connect() as client:
                await client.version()
        except TimeoutError:
            raise RuntimeUnavailable(
                f"Dagger engine did not answer within {self.check_timeout_seconds:g}s "
                f"({probe.reason})"
            ) from None
        except (dagger.DaggerError, OSError) as e:
            raise RuntimeUnavailable(f"Dagger engine unusable: {_first_lines(e)}") from e

    async def reap(self, run_id: str) -> int:
        # Nothing to find: an exec exists only inside the session that asked for it, and the
        # engine cancels it when that session ends (also when the executor process dies, which
        # closes the session). There is no named container per run, and the API offers no way
        # to list or stop another session's execs.
        return 0

    # --- run -------------------------------------------------------------------------------

    async def run(self, spec: RunSpec, cancel: asyncio.Event) -> SandboxResult:
        started = time.monotonic()
        if cancel.is_set():
            return self._result(Termination.CANCELLED, started, detail="cancelled before start")
        if spec.network and not self.engine_has_egress:
            return self._result(
                Termination.START_FAILED, started,
                detail="the run asks for network egress, but this Dagger engine runs on an "
                "internal-only network",
            )
        if not spec.network and self.engine_has_egress:
            return self._result(
                Termination.START_FAILED, started,
                detail="this Dagger engine has network egress and withExec cannot deny it; "
                "refusing a run without network permission",
            )
        attempt = asyncio.create_task(self._attempt(spec, started), name=spec.sandbox_name)
        waiter = asyncio.create_task(cancel.wait())
        try:
            await asyncio.wait({attempt, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if attempt.done():
                return attempt.result()
            # Cancelled: stop awaiting the engine. Leaving the connection's context ends the
            # request (and the session, when the SDK started it); give it a moment, then let
            # it finish closing in the background.
            attempt.cancel()
            await asyncio.wait({attempt}, timeout=self.cancel_wait_seconds)
            if not attempt.done():
                self._background.add(attempt)
                attempt.add_done_callback(self._background.discard)
            return self._result(Termination.CANCELLED, started, detail="cancelled on request")
        finally:
            waiter.cancel()
            if not attempt.done() and attempt not in self._background:
                attempt.cancel()  # run() itself was cancelled (executor shutting down)

    async def _attempt(self, spec: RunSpec, started: float) -> SandboxResult:
        try:
            async with contextlib.AsyncExitStack() as stack:
                client, image_ref, command = await self._start(stack, spec, started)
                return await self._exec(client, spec, started, image_ref, command)
        except _Outcome as o:
            return o.result

    async def _start(
        self, stack: contextlib.AsyncExitStack, spec: RunSpec, started: float
    ) -> tuple[dagger.Client, str, list[str]]:
        """Connect, pull and pin the image, resolve the command. Failures: START_FAILED."""
        try:
            async with asyncio.timeout(self.start_timeout_seconds):
                client = await stack.enter_async_context(self._connect())
                # imageRef pulls the image and gives its digest: the exec then runs exactly the
                # image that was resolved, and the digest is reported for pinning.
                image_ref = await client.container().from_(spec.image).image_ref()
                command = await image_command(client.container().from_(image_ref), spec)
        except TimeoutError:
            raise _Outcome(self._result(
                Termination.START_FAILED, started,
                detail=f"engine did not start the sandbox within {self.start_timeout_seconds:g}s",
            )) from None
        except (dagger.DaggerError, RuntimeUnavailable, OSError) as e:
            raise _Outcome(self._result(
                Termination.START_FAILED, started, detail=f"engine: {_first_lines(e)}"
            )) from e
        if not command:
            raise _Outcome(self._result(
                Termination.START_FAILED, started, image_digest=_digest(image_ref),
                detail=f"image {spec.image} has no entrypoint or default command",
            ))
        return client, image_ref, command

    async def _exec(
        self, client: dagger.Client, spec: RunSpec, started: float, image_ref: str,
        command: list[str],
    ) -> SandboxResult:
        digest = _digest(image_ref)
        try:
            ctr = agent_container(
                client, spec, input_json=run_request_json(spec), command=command,
                image=image_ref, kill_grace_seconds=self.kill_grace_seconds,
            )
        except ValueError as e:
            return self._result(Termination.START_FAILED, started, detail=str(e),
                                image_digest=digest)
        return await self.run_container(ctr, spec, started=started, image_digest=digest)

    async def run_container(
        self, ctr: dagger.Container, spec: RunSpec, *, started: float,
        image_digest: str | None = None,
    ) -> SandboxResult:
        """Evaluate an ``agent_container`` (one request, under the client-side backstop) and
        map what comes back. Shared with the ``dagger/`` module's ``run-agent``."""
        digest = image_digest
        limits = spec.limits
        backstop = limits.timeout_seconds + self.kill_grace_seconds + self.backstop_grace_seconds
        try:
            # One request: run the exec and read the wrapper's result file from its snapshot.
            async with asyncio.timeout(backstop):
                text = await ctr.file(RESULT_PATH).contents()
        except TimeoutError:
            return self._result(
                Termination.TIMED_OUT, started, image_digest=digest,
                detail=f"client-side backstop: no result from the engine within {backstop:g}s",
            )
        except dagger.ExecError as e:
            # Only when the wrapper itself died with 128-191 (e.g. SIGKILLed with the sandbox):
            # no status exists; the agent may have run.
            logs = (e.stdout + e.stderr).encode()
            cap = spec.limits.log_kib * 1024
            return self._result(
                Termination.EXITED, started, exit_code=e.exit_code, logs=logs[:cap],
                logs_truncated=len(logs) > cap, image_digest=digest,
                detail=f"the limits wrapper ended with code {e.exit_code} and wrote no status",
            )
        except dagger.QueryError as e:
            return self._result(
                Termination.START_FAILED, started, image_digest=digest,
                detail=f"the limits wrapper produced no result (is python3 on the image's "
                f"PATH?): {_first_lines(e)}",
            )
        except (dagger.DaggerError, OSError) as e:
            return self._result(
                Termination.EXITED, started, image_digest=digest,
                detail=f"engine failed during the run (the agent may have run): {_first_lines(e)}",
            )
        return self.result_from_bundle(text, started=started, image_digest=digest)

    # --- mapping ---------------------------------------------------------------------------

    def result_from_bundle(
        self, text: str, *, started: float, image_digest: str | None = None
    ) -> SandboxResult:
        """Map the wrapper's result file (status + base64 logs/output) to a SandboxResult."""
        try:
            doc = json.loads(text)
            status: dict[str, Any] = doc["status"]
            logs = base64.b64decode(doc["logs_b64"], validate=True)
            out_b64 = doc.get("output_b64")
            output = None if out_b64 is None else base64.b64decode(out_b64, validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error) as e:
            return self._result(Termination.EXITED, started, image_digest=image_digest,
                                detail=f"unreadable limits-wrapper result: {e}")
        common: dict[str, Any] = {
            "exit_code": status.get("exit_code"),
            "output": output,
            "output_truncated": bool(status.get("output_truncated")),
            "logs": logs,
            "logs_truncated": bool(status.get("logs_truncated")),
            "peak_memory_bytes": status.get("peak_rss_bytes"),
            "image_digest": image_digest,
            # The agent's own run time, measured in the sandbox (excludes the image pull).
            "duration": status.get("duration_seconds"),
        }
        if status.get("start_error"):
            return self._result(Termination.START_FAILED, started,
                                detail=str(status["start_error"]), **common)
        if status.get("timed_out"):
            limit = status.get("limits", {}).get("timeout_seconds")
            return self._result(Termination.TIMED_OUT, started,
                                detail=f"wall-clock limit of {limit}s reached; killed", **common)
        if status.get("oom_suspected"):
            return self._result(Termination.OOM_KILLED, started,
                                detail=str(status.get("oom_reason") or "memory limit"), **common)
        detail = "the limits wrapper was asked to stop" if status.get("terminated") else ""
        return self._result(Termination.EXITED, started, detail=detail, **common)

    @staticmethod
    def _result(
        termination: Termination,
        started: float,
        *,
        exit_code: int | None = None,
        output: bytes | None = None,
        output_truncated: bool = False,
        logs: bytes = b"",
        logs_truncated: bool = False,
        peak_memory_bytes: int | None = None,
        detail: str = "",
        image_digest: str | None = None,
        duration: float | None = None,
    ) -> SandboxResult:
        return SandboxResult(
            termination=termination,
            exit_code=exit_code,
            output=output,
            output_truncated=output_truncated,
            logs=logs,
            logs_truncated=logs_truncated,
            duration_seconds=(
                float(duration) if duration is not None else time.monotonic() - started
            ),
            peak_memory_bytes=peak_memory_bytes,
            detail=detail,
            image_digest=image_digest,
        )


class DaggerSettings(RuntimeSettings):
    """The Dagger runtime's options (``engine_has_egress`` is ``AIRLOCK_ENGINE_HAS_EGRESS``)."""

    engine_has_egress: bool = False
    start_timeout_seconds: float = 300.0
    backstop_grace_seconds: float = 30.0
    kill_grace_seconds: float = DEFAULT_KILL_GRACE_SECONDS
    cancel_wait_seconds: float = 1.0
    check_timeout_seconds: float = 30.0


async def _auto_probe() -> str | None:
    """For ``auto``: only an engine that positively answers a quick probe is worth a session."""
    return None if await engine_reachable() else "dagger: no engine reachable"


FACTORY = RuntimeFactory(
    settings=DaggerSettings,
    create=lambda s: DaggerRuntime(**s.model_dump()),
    probe=_auto_probe,
)
