"""Web UI benchmark: the instances page's server time with N instances stored, on NATS.

Stores N instance states in a fresh ``nats-server`` (as ``bench/visibility.py``
does: four types, a mix of statuses), serves the API with its web UI on a
free port, and times each page below over HTTP on the loopback interface,
from the request sent to the last byte read: the server's time plus a
loopback round trip. p50 and max over repeated requests, after one warm-up
(the first request builds the client's index of the instances, once per
process; that is timed apart).

* the first page (newest first) and a page deep in the list;
* filtered by type and status, and by a start-time window (indexed);
* filtered by version (indexed), and by id prefix (looked up in the ids
  in order: it costs the ids that have the prefix; ``i`` has them all);
* the live fragment the page polls, and one instance's page.

Usage, from the repository root::

    python bench/ui_pages.py [--instances 100000]
    python bench/ui_pages.py --quick      # 5,000 instances: a smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

# As in bench/visibility.py: keep this folder off sys.path (bench/transport.py
# would shadow the transport package) and put the repository root on it.
_HERE: Final = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import httpx  # noqa: E402
import trio  # noqa: E402

from actors import Client  # noqa: E402
from actors.http import serve_api  # noqa: E402
from actors.testing import NatsServer  # noqa: E402
from transport import open_transport  # noqa: E402

#: Requests per page timed.
REQUESTS: Final = 20
#: The target of the issue: a page in under this many milliseconds.
TARGET_MS: Final = 300.0


def _visibility() -> object:
    """``bench/visibility.py`` as a module (this folder is off ``sys.path``)."""
    spec = importlib.util.spec_from_file_location("bench_visibility", _HERE / "visibility.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def run(instances: int) -> None:
    visibility = _visibility()
    with tempfile.TemporaryDirectory() as folder, NatsServer(Path(folder)) as server:
        async with open_transport(server.url) as transport, trio.open_nursery() as nursery:
            base: float = await visibility.store_states(transport, instances)  # type: ignore[attr-defined]
            async with Client(transport) as client:
                url = await nursery.start(
                    lambda task_status: serve_api(client, port=0, task_status=task_status)
                )
                async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                    started = time.perf_counter()
                    first = await http.get("/ui/")
                    assert first.status_code == 200, first.text[:500]
                    print(
                        f"first page    {time.perf_counter() - started:.2f} s "
                        "(builds the client's index: one pass over the bucket, once per process)"
                    )
                    after = time.strftime(
                        "%Y-%m-%dT%H:%M:%S", time.gmtime(base + instances * 0.004)
                    )
                    before = time.strftime(
                        "%Y-%m-%dT%H:%M:%S", time.gmtime(base + instances * 0.006)
                    )
                    deep = max(1, instances // 50 // 2)
                    pages = {
                        "page 1": "/ui/",
                        "deep page": f"/ui/?page={deep}",
                        "type+status": "/ui/?type=refund&status=running",
                        "time window": f"/ui/?after={after}&before={before}",
                        "last page": f"/ui/?page={max(1, -(-instances // 50))}",
                        "id prefix": "/ui/?prefix=i00012",
                        "prefix of all": "/ui/?prefix=i",
                        "version": "/ui/?version=1&page=2",
                        "type+prefix": "/ui/?type=order&prefix=i0001",
                        "live fragment": "/ui/instances/live",
                        "instance": "/ui/instances/i0000042",
                    }
                    print(f"{'page':<14} {'p50 ms':>8} {'max ms':>8}  {'target':>6}  path")
                    for name, path in pages.items():
                        times = []
                        for _ in range(REQUESTS):
                            began = time.perf_counter()
                            response = await http.get(path)
                            times.append((time.perf_counter() - began) * 1000)
                            assert response.status_code == 200, (path, response.text[:500])
                        p50 = statistics.median(times)
                        verdict = "ok" if max(times) < TARGET_MS else "OVER"
                        print(f"{name:<14} {p50:>8.1f} {max(times):>8.1f}  {verdict:>6}  {path}")
            nursery.cancel_scope.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="5,000 instances: a smoke run")
    args = parser.parse_args()
    trio.run(run, 5_000 if args.quick else args.instances)
    return 0


if __name__ == "__main__":
    sys.exit(main())
