"""Identifiers, made in one place (``agents.ids``, the bottom layer every process shares)."""

from __future__ import annotations

from agents.ids import new_key_id, new_run_id, ulid

__all__ = ["new_key_id", "new_run_id", "ulid"]
