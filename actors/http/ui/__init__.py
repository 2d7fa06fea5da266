"""The web UI, served by the HTTP API's process: pages rendered on the server.

:class:`WebUi` builds the routes :func:`actors.http.create_app` mounts at
``/ui`` (and ``/``, which leads there, and ``/docs``). Templates and static
files are package data of this package; nothing is fetched from elsewhere.
"""

from ._app import WebUi as WebUi

__all__ = ["WebUi"]
