"""The ``airlock`` command line: one module per command group, above both processes.

It owns process start-up (``serve``, ``executor``, ``relay``, ``dev``: settings, logging,
signals, exit statuses) and the client commands; ``server``, ``executor`` and ``agents``
never import it. Heavy modules (the control plane, SQLAlchemy, sandbox runtimes) are imported
inside the handlers that need them, so client commands start fast and need nothing but gRPC.

Exit statuses: 0 success, 1 error, 2 usage error, 3 configuration or start-up failure,
4 a run ended without succeeding, 130 interrupted.
"""

from airlock.cli._main import build_parser, main

__all__ = ["build_parser", "main"]
