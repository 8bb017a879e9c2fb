"""Where the services reach the outside world without importing it: observer signals, sent
robustly, and the request for draining sessions that ``notifications.tasks`` turns into broker
messages (tasks is the only module that talks to the broker, so the services never import it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger("notifications.services")

#: ``publisher(sessions)`` asks the workers for up to ``sessions`` more draining sessions; set by
#: ``notifications.tasks`` when it is imported (AppConfig.ready imports it in every process).
_publisher: Callable[[int], None] | None = None


def set_publisher(publisher: Callable[[int], None]) -> None:
    global _publisher
    _publisher = publisher


def request_sessions(sessions: int = 1) -> None:
    """Ask for up to ``sessions`` drain tasks. Never raises: the sweeper catches up anyway."""
    if sessions > 0 and _publisher is not None:
        _publisher(sessions)


def send_robust(signal, *, sender, **kwargs) -> None:
    """Send an observer signal; a receiver that raises is logged, never propagated."""
    for receiver, result in signal.send_robust(sender=sender, **kwargs):
        if isinstance(result, Exception):
            logger.error(
                "Receiver %r of a notifications signal raised %r", receiver, result, exc_info=result
            )
