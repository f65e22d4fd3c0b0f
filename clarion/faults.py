"""Failpoints: named places in the send path where a drill can make a worker hang or die.

``CLARION_FAILPOINTS="after_send_recorded=hang"`` makes a worker stop right after it has
recorded a provider's acceptance, so that an operator (or a test) can kill it there and
watch the next worker finish the message without sending it again;
``broadcast_after_send`` stops a broadcast batch after a chunk went out and before its
outcomes are written (the worst moment: the retry sends that chunk again). Actions: ``hang``
(wait forever) and ``exit`` (end the process at once, as a crash would).
"""

from __future__ import annotations

import asyncio
import os

from clarion.logging import get_logger

log = get_logger(__name__)


def parse_failpoints(spec: str) -> dict[str, str]:
    points: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        action = action.strip()
        if action not in ("hang", "exit"):
            raise ValueError(f"CLARION_FAILPOINTS: {item!r}: the action must be hang or exit")
        points[name.strip()] = action
    return points


async def failpoint(spec: str, name: str) -> None:
    action = parse_failpoints(spec).get(name) if spec else None
    if action is None:
        return
    log.warning("failpoint reached", failpoint=name, action=action)
    if action == "exit":
        os._exit(137)
    await asyncio.Event().wait()
