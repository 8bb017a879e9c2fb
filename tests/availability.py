"""Services a test needs: skip with one line on a laptop without them, fail loudly in CI."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_service(available: bool, what: str, how_to_start: str) -> None:
    """Skip on a laptop without the service (one line naming how to start it); fail in CI."""
    if available:
        return
    message = f"{what} is not reachable: start it with `{how_to_start}`."
    if IN_CI:
        pytest.fail(f"{message} It is required in CI (CI=true).", pytrace=False)
    pytest.skip(message)
