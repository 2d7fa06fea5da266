"""The HTTP Engine API: an ASGI app, served by hypercorn on Trio, and its OpenAPI document."""

from ._api import create_app as create_app
from ._api import serve_api as serve_api

__all__ = [
    "create_app",
    "serve_api",
]
