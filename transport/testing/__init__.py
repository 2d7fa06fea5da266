"""The transport conformance suite, for any implementation of :class:`transport.Transport`.

::

    import pytest
    from transport.testing import Connect, TransportTests

    class TestMyTransport(TransportTests):
        @pytest.fixture
        def connect(self) -> Connect:
            return lambda: open_my_transport("mine://127.0.0.1")

Every test of the suite then runs against that transport; see
:class:`TransportTests` for the fixtures it takes and ``docs/transport.md``
("Adding a transport"). Needs pytest and pytest-trio.
"""

from ._rewrite import rewrite_assertions as _rewrite_assertions

_rewrite_assertions(__name__, __path__)

from ._fixtures import Clock as Clock  # noqa: E402
from ._fixtures import Connect as Connect  # noqa: E402
from ._fixtures import CountConsumers as CountConsumers  # noqa: E402
from ._fixtures import MakeKV as MakeKV  # noqa: E402
from ._fixtures import MakeStream as MakeStream  # noqa: E402
from ._fixtures import Names as Names  # noqa: E402
from ._suite import TransportTests as TransportTests  # noqa: E402

__all__ = [
    "Clock",
    "Connect",
    "CountConsumers",
    "MakeKV",
    "MakeStream",
    "Names",
    "TransportTests",
]
