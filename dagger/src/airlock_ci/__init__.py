"""Airlock's Dagger module: build and try agents, run the test suite in containers.

``_repo`` is imported first: it makes the repository's ``agents`` and ``executor`` packages
importable, which ``main`` needs.
"""

from airlock_ci._repo import REPO_ROOT as REPO_ROOT
from airlock_ci.main import AirlockCi as AirlockCi
