"""The web UI's sign-in and its forms' protection against cross-site requests.

With an API token configured, a person signs in once with the token; the
UI then keeps a session cookie (``HttpOnly``, ``SameSite=Strict``): not the
token itself but an HMAC of a fixed label keyed by the token's digest, so
that the cookie proves the token was given and is worth nothing once the
token changes, and no server-side session store is needed. A request to a
page may also carry the API's ``Authorization: Bearer`` header instead.

Every form carries a CSRF token, checked on every POST against a cookie of
its own (the double-submit pattern): a page of another site can make a
browser post to the UI, but can neither read that cookie nor, with
``SameSite=Strict``, have the browser send it. The ``Origin`` header, when
a browser sends one, must also name the host the request was sent to
(``null``, which sandboxed and privacy-minded contexts send, names none:
the cookie decides alone).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "HEADERS", "SESSION_COOKIE", "Guard"]

SESSION_COOKIE: Final = "actors_session"
CSRF_COOKIE: Final = "actors_csrf"
#: The name of the hidden field every form carries the CSRF token in.
CSRF_FIELD: Final = "csrf"
_SESSION_LABEL: Final = b"actors web UI session v1"
#: The headers of every page: nothing from elsewhere runs, nothing frames it.
HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Guard:
    """Checks sign-in and CSRF tokens for one API token (``None``: nobody signs in)."""

    def __init__(self, token: str | None) -> None:
        self._key = None if token is None else hashlib.sha256(token.encode()).digest()

    @property
    def required(self) -> bool:
        """Whether a person must sign in."""
        return self._key is not None

    def token_matches(self, given: str) -> bool:
        """Whether ``given`` is the API token (compared in constant time)."""
        if self._key is None:
            return True
        return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), self._key)

    def _session(self) -> str:
        assert self._key is not None
        return hmac.new(self._key, _SESSION_LABEL, hashlib.sha256).hexdigest()

    def signed_in(self, request: Request) -> bool:
        """Whether the request carries the session cookie or the bearer token (or needs none)."""
        if self._key is None:
            return True
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), self._session().encode()):
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return (
            scheme.lower() == "bearer" and bool(given.strip()) and self.token_matches(given.strip())
        )

    def sign_in(self, response: Response, request: Request) -> None:
        """Set the session cookie on ``response``."""
        response.set_cookie(
            SESSION_COOKIE,
            self._session(),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )

    @staticmethod
    def sign_out(response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")

    @staticmethod
    def csrf_token(request: Request) -> str:
        """The request's CSRF token: its cookie's, or a new one (set by :meth:`keep_csrf`)."""
        token = request.cookies.get(CSRF_COOKIE, "")
        if len(token) == 43 and token.replace("-", "").replace("_", "").isalnum():
            return token
        return secrets.token_urlsafe(32)

    @staticmethod
    def keep_csrf(response: Response, request: Request, token: str) -> None:
        """Set the CSRF cookie on ``response`` if the request did not carry ``token`` in it."""
        if request.cookies.get(CSRF_COOKIE) != token:
            response.set_cookie(
                CSRF_COOKIE,
                token,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
                path="/",
            )

    @staticmethod
    def csrf_valid(request: Request, given: str) -> bool:
        """Whether a form's ``given`` token matches the request's CSRF cookie and origin."""
        origin = request.headers.get("origin")
        # The host only, not the scheme: behind a proxy that ends TLS, the
        # browser says https and the request arrives here over http.
        # ``null`` names no origin: the cookie decides alone.
        if origin not in (None, "null") and urlsplit(origin).netloc != request.headers.get(
            "host", ""
        ):
            return False
        cookie = request.cookies.get(CSRF_COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), given.encode())
