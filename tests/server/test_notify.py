"""The wake-up primitive every background loop waits on must never swallow a cancellation."""

from __future__ import annotations

import asyncio

from server.store.notify import Notifier


async def test_cancellation_arriving_as_the_channel_fires_stops_the_waiting_loop() -> None:
    """On Python 3.11, asyncio.wait_for loses this cancellation (the loop below would spin
    forever and an executor's stop() would hang); Notifier.wait must not."""
    notifier = Notifier()
    lost = 0
    for _ in range(50):
        async def loop() -> None:
            while True:
                await notifier.wait(notifier.token("ch"), 5)

        task = asyncio.create_task(loop())
        await asyncio.sleep(0)  # the loop is now waiting on its token
        notifier.publish("ch")
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=0.5)
        if not done:
            lost += 1
            task.cancel()
            await asyncio.wait([task], timeout=0.5)
    assert lost == 0


async def test_wait_reports_publish_and_timeout() -> None:
    notifier = Notifier()
    token = notifier.token("ch")
    notifier.publish("ch")
    assert await notifier.wait(token, 1) is True
    assert await notifier.wait(notifier.token("ch"), 0.01) is False
