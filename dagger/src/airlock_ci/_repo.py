"""Make this repository's ``agents`` and ``executor`` packages importable by the module.

How the module shares code with the executor (rather than copying it): the Python SDK's
runtime mounts the module's *context directory* (the git repository, filtered by ``include``
in ``dagger/dagger.json``, which loads ``agents/`` and ``executor/``) and installs the module
editable from ``dagger/`` (``uv pip install -e ./sdk -e .``). This file is therefore at
``<repo>/dagger/src/airlock_ci/_repo.py`` in the engine as in a checkout, and the repository
root is three folders up. It is *appended* to ``sys.path``: installed packages (the ``dagger``
SDK above all) keep priority, and the repository's own ``dagger/`` folder has no
``__init__.py``, so it can never shadow the SDK.

Not a path dependency on the ``airlock`` distribution (``airlock = { path = ".." }``): that
distribution pins ``dagger-io==0.21.11`` while the module runs the SDK that ``dagger develop``
vendors into ``dagger/sdk`` (its version comes from git metadata the vendored copy lacks), so
the install would not resolve; and it would pull grpcio, SQLAlchemy, psycopg, ... into a module
that needs pydantic, PyYAML and jsonschema only (declared in ``dagger/pyproject.toml``).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED = ("agents/manifest.py", "executor/runtime/dagger_pipeline.py")


def ensure_importable(root: Path = REPO_ROOT) -> Path:
    missing = [p for p in SHARED if not (root / p).is_file()]
    if missing:
        raise ImportError(
            f"airlock-ci needs the repository's agents/ and executor/ packages next to dagger/ "
            f"(not found under {root}: {', '.join(missing)}); is the module installed editable "
            f"and does dagger.json include them?"
        )
    if str(root) not in sys.path:
        sys.path.append(str(root))
    return root


ensure_importable()
