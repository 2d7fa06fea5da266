"""What operators watch: Prometheus metrics, health and readiness probes, traces.

:class:`Metrics` is counted by the services as they work and exported when
scraped; :func:`serve_probes` serves ``/metrics``, ``/healthz`` and
``/readyz`` on one port, as a Trio task of the service's nursery. Tracing
(OpenTelemetry, the optional ``actors[otel]`` extra) is in ``_tracing``.
"""

from . import _tracing as tracing
from ._asgi import MeasuredApp as MeasuredApp
from ._metrics import MAX_SERIES as MAX_SERIES
from ._metrics import NO_METRICS as NO_METRICS
from ._metrics import Metrics as Metrics
from ._metrics import clock as clock
from ._probes import Probes as Probes
from ._probes import ProbesPortError as ProbesPortError
from ._probes import Readiness as Readiness
from ._probes import connected as connected
from ._probes import serve_probes as serve_probes

__all__ = [
    "MAX_SERIES",
    "NO_METRICS",
    "MeasuredApp",
    "Metrics",
    "Probes",
    "ProbesPortError",
    "Readiness",
    "clock",
    "connected",
    "serve_probes",
    "tracing",
]
