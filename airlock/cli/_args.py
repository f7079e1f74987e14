"""Argument types and readers shared by the commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from airlock.cli._framework import CliError


def read_text_arg(value: str, what: str) -> str:
    """``@file`` reads a file, ``@-`` or ``-`` reads stdin, anything else is the text itself."""
    if value in ("-", "@-"):
        return sys.stdin.read()
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text()
        except OSError as e:
            raise CliError(f"{what}: cannot read {value[1:]}: {e.strerror or e}") from None
    return value


def json_arg(value: str, what: str) -> str:
    """Read and check a JSON argument; returns the text (sent as given)."""
    text = read_text_arg(value, what)
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"{what}: not valid JSON: {e}") from None
    return text


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value
