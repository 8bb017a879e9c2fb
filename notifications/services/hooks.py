"""Where the services reach the outside world without importing it: observer signals, sent
robustly, and the request for draining sessions that ``notifications.tasks`` turns into broker
messages (tasks is the only module that talks to the broker, so the services never import it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

logger = logging.getLogger("notifications.services")

#: ``publisher(sessions)`` asks the workers for up to ``sessions`` more draining sessions, and
#: ``publisher(1, at=moment)`` for one at a later moment; set by ``notifications.tasks`` when it
#: is imported (AppConfig.ready imports it in every process).
_publisher: Callable[..., None] | None = None


def set_publisher(publisher: Callable[..., None]) -> None:
    global _publisher
    _publisher = publisher


def request_sessions(sessions: int = 1) -> None:
    """Ask for up to ``sessions`` drain tasks. Never raises: the sweeper catches up anyway."""
    if sessions > 0 and _publisher is not None:
        _publisher(sessions)


def request_sessions_at(moment: datetime) -> None:
    """Ask for one drain task at ``moment`` (a rate-limit window opens). Never raises."""
    if _publisher is not None:
        _publisher(1, at=moment)


def send_robust(signal, *, sender, **kwargs) -> None:
    """Send an observer signal; a receiver that raises is logged, never propagated."""
    for receiver, result in signal.send_robust(sender=sender, **kwargs):
        if isinstance(result, Exception):
            logger.error(
                "Receiver %r of a notifications signal raised %r", receiver, result, exc_info=result
            )
