"""Shared pytest set-up for tests/."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _mindspore_mode(request: pytest.FixtureRequest) -> None:
    """A module that sets MS_MODE runs each of its tests in that MindSpore mode. The mode is process-global and
    other modules (dehazing, training) switch it to graph, so setting it once at import is not enough."""
    mode = getattr(request.module, "MS_MODE", None)
    if mode:
        from singan_ms.device import setup

        setup("CPU", mode)
