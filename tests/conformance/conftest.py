"""Fixtures of the JetStream-only transport tests beside the conformance suite.

The suite itself is :mod:`transport.testing` (``test_transport.py`` runs it on
both transports).
"""

from __future__ import annotations

import pytest

from transport.testing import Names


@pytest.fixture
def names() -> Names:
    """Stream, bucket, consumer and subject names no other test of the session uses."""
    return Names()
