"""The whole conformance suite in one class, for a transport to subclass."""

from __future__ import annotations

from ._consume import ConsumeTests
from ._delayed import DelayedTests
from ._kv import KVTests
from ._lifecycle import LifecycleTests
from ._partitions import PartitionTests
from ._publish import PublishTests
from ._read import ReadTests
from ._streams import StreamTests
from ._watch import WatchTests


class TransportTests(
    LifecycleTests,
    PublishTests,
    StreamTests,
    ConsumeTests,
    DelayedTests,
    PartitionTests,
    ReadTests,
    KVTests,
    WatchTests,
):
    """Every test of the :class:`~transport.Transport` contract, for any implementation.

    Subclass it in a test module under a name pytest collects (``Test...``)
    and give the subclass a ``connect`` fixture: a function that, called with
    no arguments, returns an async context manager opening a new transport
    on the broker under test and closing it on exit. The suite opens one
    transport per test through it (the ``transport`` fixture), and more for
    the tests that close their own. Every test takes its stream, bucket,
    consumer and subject names from :class:`Names`, so all of them may share
    one broker. Two fixtures are optional:

    * ``virtual_time`` (default ``False``): ``True`` if the transport's
      timers (ack wait, nak delay, ``deliver_at``, max age, duplicate window,
      TTL) follow Trio's clock, as the memory transport's do. Timing tests then
      run on an autojump clock and take no real time.
    * ``count_consumers`` (default ``None``): an async function
      ``(transport, stream) -> int`` giving the number of consumers a stream
      has; with it, a test checks that ``read`` creates none.

    The tests are Trio tests (marked ``trio``, so Trio mode is not needed):
    the project needs pytest and pytest-trio. Their assertions are rewritten
    as a test module's, so a failure shows the values compared.
    """
