"""The Dagger sandbox runtime (production): one fresh exec per attempt on a Dagger engine,
with the jail inside it.

Dagger's ``withExec`` has no memory, CPU or pids limit and no switch to turn the network off,
so every exec runs the jail (``executor/runtime/jail_core``): the exec is started with
``insecureRootCapabilities`` and runs the jail's supervisor from a read-only bundle this
executor supplies (``executor.runtime.jail_core.bundle``: the static supervisor, ``bwrap``,
``slirp4netns``, their libraries and loader, the seccomp filter). The supervisor gives the run
its own cgroup (memory = swap, pids, cpu), kills it at the deadline, reads OOM from the cgroup's
counters and starts the agent through bubblewrap as uid 65534 in new namespaces, with no
capabilities, no-new-privileges, seccomp and a read-only root; network only when the run was
granted egress (slirp4netns), decided per run, so one engine serves runs with and without.
The image is only the jail's root filesystem: its configuration (command, environment, working
directory) is read here, once per image digest, and handed to the jail; nothing from the image
runs with privileges. See docs/security.md for the trust model.

A client-side ``asyncio.timeout`` is the backstop in case the engine itself stalls.

Client: ``dagger.Connection(dagger.Config(retry=None))``. With the SDK's default retry policy
a request that times out is sent again (several times) and other requests on the client are
disturbed; an exec must run at most once. One connection per attempt: closing it ends the
session when the SDK started one, which is how a cancelled run's exec is torn down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import dagger
from pydantic import Field

from executor.runtime.base import (
    RunSpec,
    RuntimeFactory,
    RuntimeSettings,
    RuntimeUnavailable,
    SandboxResult,
    Termination,
)
from executor.runtime.dagger_pipeline import RESULT_PATH, image_config, jail_container
from executor.runtime.jail import result_from_document
from executor.runtime.jail_core.bundle import Bundle, BundleError, ImageConfig, host_bundle

ConnectFactory = Callable[[], AbstractAsyncContextManager[dagger.Client]]

PROBE_TIMEOUT_SECONDS = 1.0
DETAIL_MAX = 2000  # characters of an engine error kept in SandboxResult.detail
IMAGE_CONFIGS_KEPT = 256  # image configurations cached (per digest-pinned reference)
# The engine's platform names for this host's machine: the bundle is this host's programs.
_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def default_bundle_dir() -> Path:
    """Where the jail's bundle is assembled when ``jail_bundle_dir`` is unset."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "airlock" / "jail"


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
    network_pool: bool | None = None  # network is decided per run, inside the exec (the jail)

    def __init__(
        self,
        *,
        bundle_dir: Path | None = None,
        bundle: Bundle | None = None,
        start_timeout_seconds: float = 300.0,
        backstop_grace_seconds: float = 30.0,
        cancel_wait_seconds: float = 1.0,
        check_timeout_seconds: float = 30.0,
        log_output: TextIO | None = None,
        connect: ConnectFactory | None = None,
    ) -> None:
        """``bundle_dir``: where the jail's bundle is assembled from this host's programs
        (default ``default_bundle_dir()``); ``bundle`` gives one already assembled.
        ``start_timeout_seconds`` bounds connecting, pulling the image and reading its
        configuration; ``backstop_grace_seconds`` is added to the run's timeout for the
        client-side backstop; ``connect`` replaces ``dagger.Connection`` (tests)."""
        self.bundle_dir = bundle_dir or default_bundle_dir()
        self._bundle = bundle
        self.start_timeout_seconds = start_timeout_seconds
        self.backstop_grace_seconds = backstop_grace_seconds
        self.cancel_wait_seconds = cancel_wait_seconds
        self.check_timeout_seconds = check_timeout_seconds
        self._log_output = log_output
        self._connect_factory = connect
        self._configs: OrderedDict[str, ImageConfig] = OrderedDict()
        self._background: set[asyncio.Task[Any]] = set()  # cancelled attempts still closing

    def _connect(self) -> AbstractAsyncContextManager[dagger.Client]:
        if self._connect_factory is not None:
            return self._connect_factory()
        _ensure_cli()
        return dagger.Connection(dagger.Config(retry=None, log_output=self._log_output))

    async def bundle(self) -> Bundle:
        """The jail's bundle (assembled once; raises RuntimeUnavailable saying what is missing)."""
        if self._bundle is None:
            try:
                self._bundle = await asyncio.to_thread(host_bundle, self.bundle_dir)
            except (BundleError, OSError) as e:
                raise RuntimeUnavailable(f"dagger runtime: cannot assemble the jail's bundle "
                                         f"in {self.bundle_dir}: {e}") from e
        return self._bundle

    async def check(self) -> None:
        probe = await probe_engine()
        if probe.reachable is False:
            raise RuntimeUnavailable(f"no Dagger engine reachable ({probe.reason})")
        await self.bundle()
        try:  # reachable or unknown: a real session proves it
            async with asyncio.timeout(self.check_timeout_seconds), self._connect() as client:
                await client.version()
                engine_platform = str(await client.default_platform())
        except TimeoutError:
            raise RuntimeUnavailable(
                f"Dagger engine did not answer within {self.check_timeout_seconds:g}s "
                f"({probe.reason})"
            ) from None
        except (dagger.DaggerError, OSError) as e:
            raise RuntimeUnavailable(f"Dagger engine unusable: {_first_lines(e)}") from e
        arch = _ARCHES.get(platform.machine(), platform.machine())
        if engine_platform.split("/")[1:2] != [arch]:
            raise RuntimeUnavailable(
                f"the Dagger engine runs {engine_platform}, but the jail's bundle holds this "
                f"host's linux/{arch} programs")

    async def reap(self, run_id: str) -> int:
        # Nothing to find: an exec exists only inside the session that asked for it, and the
        # engine cancels it when that session ends (also when the executor process dies, which
        # closes the session). There is no named container per run, and the API offers no way
        # to list or stop another session's execs. The jail inside dies with the exec
        # (bubblewrap runs with --die-with-parent; the supervisor kills its cgroup).
        return 0

    # --- run -------------------------------------------------------------------------------

    async def run(self, spec: RunSpec, cancel: asyncio.Event) -> SandboxResult:
        started = time.monotonic()
        if cancel.is_set():
            return self._result(Termination.CANCELLED, started, detail="cancelled before start")
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
            bundle = await self.bundle()
        except RuntimeUnavailable as e:
            return self._result(Termination.START_FAILED, started, detail=str(e))
        try:
            async with contextlib.AsyncExitStack() as stack:
                client, image_ref, config = await self._start(stack, spec, started)
                digest = _digest(image_ref)
                try:
                    ctr = jail_container(
                        client, spec, image=client.container().from_(image_ref), config=config,
                        bundle=client.host().directory(str(bundle.path)), loader=bundle.loader)
                except ValueError as e:
                    return self._result(Termination.START_FAILED, started, detail=str(e),
                                        image_digest=digest)
                return await self.run_container(ctr, spec, started=started, image_digest=digest)
        except _Outcome as o:
            return o.result

    async def _start(
        self, stack: contextlib.AsyncExitStack, spec: RunSpec, started: float
    ) -> tuple[dagger.Client, str, ImageConfig]:
        """Connect, pull and pin the image, read its configuration. Failures: START_FAILED."""
        try:
            async with asyncio.timeout(self.start_timeout_seconds):
                client = await stack.enter_async_context(self._connect())
                # imageRef pulls the image and gives its digest: the exec then runs exactly the
                # image that was resolved, and the digest is reported for pinning.
                image_ref = await client.container().from_(spec.image).image_ref()
                config = self._configs.get(image_ref)
                if config is None:
                    config = await image_config(client.container().from_(image_ref))
                    self._configs[image_ref] = config
                    while len(self._configs) > IMAGE_CONFIGS_KEPT:
                        self._configs.popitem(last=False)
                else:
                    self._configs.move_to_end(image_ref)
        except TimeoutError:
            raise _Outcome(self._result(
                Termination.START_FAILED, started,
                detail=f"engine did not start the sandbox within {self.start_timeout_seconds:g}s",
            )) from None
        except (dagger.DaggerError, RuntimeUnavailable, OSError) as e:
            raise _Outcome(self._result(
                Termination.START_FAILED, started, detail=f"engine: {_first_lines(e)}"
            )) from e
        return client, image_ref, config

    async def run_container(
        self, ctr: dagger.Container, spec: RunSpec, *, started: float,
        image_digest: str | None = None,
    ) -> SandboxResult:
        """Evaluate a ``jail_container`` (one request, under the client-side backstop) and map
        the supervisor's result document. Shared with the ``dagger/`` module's ``run-agent``."""
        digest = image_digest
        backstop = spec.limits.timeout_seconds + self.backstop_grace_seconds
        try:
            # One request: run the exec and read the supervisor's result from its snapshot.
            async with asyncio.timeout(backstop):
                text = await ctr.file(RESULT_PATH).contents()
        except TimeoutError:
            return self._result(
                Termination.TIMED_OUT, started, image_digest=digest,
                detail=f"client-side backstop: no result from the engine within {backstop:g}s",
            )
        except dagger.ExecError as e:
            # The supervisor itself died of a signal (exit 128-191): it wrote no result, and
            # the agent may have run.
            logs = (e.stdout + e.stderr).encode()
            cap = spec.limits.log_kib * 1024
            return self._result(
                Termination.EXITED, started, exit_code=e.exit_code, logs=logs[:cap],
                logs_truncated=len(logs) > cap, image_digest=digest,
                detail=f"the jail supervisor ended with code {e.exit_code} and wrote no result",
            )
        except dagger.QueryError as e:
            # No result file: the supervisor exited 125 before the agent started (it could
            # not create the cgroup, the namespaces, ...); its reason is on its stderr.
            why = ""
            with contextlib.suppress(dagger.DaggerError, OSError, TimeoutError):
                async with asyncio.timeout(self.cancel_wait_seconds + 4):
                    why = (await ctr.stderr()).strip()[-DETAIL_MAX // 2:]
            return self._result(
                Termination.START_FAILED, started, image_digest=digest,
                detail=f"the jail supervisor wrote no result: {why or _first_lines(e)}",
            )
        except (dagger.DaggerError, OSError) as e:
            return self._result(
                Termination.EXITED, started, image_digest=digest,
                detail=f"engine failed during the run (the agent may have run): {_first_lines(e)}",
            )
        return result_from_document(text, duration_seconds=time.monotonic() - started,
                                    image_digest=digest)

    # --- mapping ---------------------------------------------------------------------------

    @staticmethod
    def _result(
        termination: Termination,
        started: float,
        *,
        exit_code: int | None = None,
        logs: bytes = b"",
        logs_truncated: bool = False,
        detail: str = "",
        image_digest: str | None = None,
    ) -> SandboxResult:
        return SandboxResult(
            termination=termination, exit_code=exit_code, output=None, output_truncated=False,
            logs=logs, logs_truncated=logs_truncated,
            duration_seconds=time.monotonic() - started, detail=detail,
            image_digest=image_digest,
        )  # fmt: skip


class DaggerSettings(RuntimeSettings):
    """The Dagger runtime's options (``bundle_dir`` is ``AIRLOCK_JAIL_BUNDLE_DIR``)."""

    bundle_dir: Path | None = Field(default=None, validation_alias="jail_bundle_dir")
    start_timeout_seconds: float = 300.0
    backstop_grace_seconds: float = 30.0
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
