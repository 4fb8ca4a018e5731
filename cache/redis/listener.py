"""One pub/sub connection per process, shared by everything that waits for news from
other replicas: a lease released, an entry replaced or deleted.

Pub/sub delivers a message only to who is subscribed when it is published: a message sent
while this process was disconnected is lost. So every time the subscription is
(re)established, and every time it breaks, the `on_reset` callbacks run: whoever keeps
state derived from messages (the memory tier's "still current" marks) drops it, and
whoever waits (a request waiting for a lease) looks again for itself. redis-py
re-subscribes by itself after a reconnect; `_PubSub.on_connect` is the hook that tells us.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from cache.redis.connection import RedisConnection

log = logging.getLogger("cache.redis")

RECONNECT_SECONDS = 0.5
READ_TIMEOUT_SECONDS = 1.0
SUBSCRIBED_WAIT_SECONDS = 2.0


class _PubSub(PubSub):
    """redis-py's PubSub, telling its owner each time the connection is (re)made."""

    def __init__(self, *args: Any, on_connected: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_connected = on_connected

    async def on_connect(self, connection: Any) -> None:
        await super().on_connect(connection)
        self._on_connected()


class Listener:
    def __init__(self, connection: RedisConnection) -> None:
        self.connection = connection
        self._handlers: dict[str, list[Callable[[str], None]]] = {}
        self._resets: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def on(self, channel: str, handler: Callable[[str], None]) -> None:
        """Call `handler(message)` for every message on `channel` (a full key name)."""
        self._handlers.setdefault(channel, []).append(handler)
        if self._task is not None:  # subscribe again, to this channel too
            self._task.cancel()
            self._task = None

    def on_reset(self, callback: Callable[[], None]) -> None:
        self._resets.append(callback)

    def _reset(self) -> None:
        for callback in self._resets:
            callback()

    async def start(self) -> bool:
        """Start listening (once per event loop); True once subscribed, False if Redis
        could not be reached within a short wait (the task keeps trying meanwhile)."""
        loop = asyncio.get_running_loop()
        started = False
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._subscribed = asyncio.Event()
            self._task = loop.create_task(self._run())
            started = True
        # Waited for only when just started: while Redis is away, nobody waits again.
        if started and not self._subscribed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), SUBSCRIBED_WAIT_SECONDS)
        return self._subscribed.is_set()

    def _connected(self) -> None:
        self._subscribed.set()
        self._reset()

    async def _run(self) -> None:
        failing = False
        while True:
            pubsub = _PubSub(
                self.connection.client.connection_pool,
                ignore_subscribe_messages=True,
                on_connected=self._connected,
            )
            try:
                await pubsub.subscribe(*self._handlers)
                self._connected()  # the first connection is made before the hook is set
                if failing:
                    log.warning("%s: subscribed again", self.connection.where)
                failing = False
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=READ_TIMEOUT_SECONDS
                    )
                    if message is not None and message.get("type") == "message":
                        self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if not failing:
                    log.warning(
                        "%s: lost the subscription (%s); retrying every %g s",
                        self.connection.where, exc, RECONNECT_SECONDS,
                    )  # fmt: skip
                failing = True
            finally:
                self._subscribed.clear()
                self._reset()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(RECONNECT_SECONDS)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        data = message["data"]
        text = data.decode() if isinstance(data, bytes) else str(data)
        for handler in self._handlers.get(channel, []):
            try:
                handler(text)
            except Exception:  # one bad handler must not stop the others' news
                log.exception("pub/sub handler for %s failed", channel)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
