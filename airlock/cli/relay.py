"""``airlock relay``: publish run events from the database outbox to NATS JetStream."""

from __future__ import annotations

import argparse
import asyncio

from airlock.cli._framework import EXIT_OK, Commands
from airlock.cli._process import install_signal_handlers
from airlock.cli._settings import load_settings


async def cmd_relay(ns: argparse.Namespace) -> int:
    from executor.relay import run_relay
    from executor.settings import RelaySettings
    from server.logs import setup_logging

    settings = load_settings(RelaySettings)
    setup_logging(settings.log_level, settings.log_format)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await run_relay(settings, stop)  # ConfigError (exit 3) if the stream takes other subjects
    return EXIT_OK


def register(cli: Commands) -> None:
    cli.add(
        "relay", cmd_relay, help="publish run events from the database outbox to NATS JetStream",
        description=(
            "Publish run_events rows to the JetStream stream AIRLOCK_NATS_STREAM (created or\n"
            "checked at start) on subjects <AIRLOCK_NATS_SUBJECT_PREFIX>.<agent>.<state>, with\n"
            "Nats-Msg-Id = the event id; rows are marked published only after JetStream's ack.\n"
            "Wakes on LISTEN/NOTIFY (PostgreSQL), survives NATS outages and restarts. Several\n"
            "relays may run against one PostgreSQL database. A bad setting, or an existing\n"
            "stream with other subjects, stops it with exit status 3. See docs/events.md."
        ),
    )
