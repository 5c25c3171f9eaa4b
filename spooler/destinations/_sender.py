"""Sending one request with httpx, within its total deadline, reading a bounded answer.

The only module of the package that imports httpx: a destination makes its sender when
a drain starts, so that the config checks of ``spooler enqueue`` never load it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpcore  # noqa: F401 - its loggers must exist before they are filtered
import httpx

from ..redact import RedactingFilter, Redactor
from . import MAX_ERROR_BYTES, Verdict
from ._deadline import DeadlineClients

__all__ = ["MAX_RESPONSE_BYTES", "HttpSender"]

# The most of an answer's body read: enough for any error a receiver names events in.
MAX_RESPONSE_BYTES = 1024 * 1024


class HttpSender:
    """POSTs request bodies with fixed headers, each within ``timeout`` seconds in all.

    Usage::

        sender = HttpSender({"Authorization": "Bearer KEY"}, timeout=10.0, redact=redact)
        verdict = sender.post(url, body, {}, judge=judge)
        sender.close()
    """

    def __init__(self, headers: Mapping[str, str], *, timeout: float, redact: Redactor) -> None:
        self._timeout = timeout
        self._redact = redact
        # One client per worker thread, each with one connection: what a request is
        # cut off on when its deadline passes (_deadline.py). They share one TLS context:
        # loading the CA certificates is most of what making a client costs.
        tls = httpx.create_ssl_context()
        self._clients = DeadlineClients(
            lambda: httpx.Client(
                headers=dict(headers),
                verify=tls,
                timeout=httpx.Timeout(timeout),
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                follow_redirects=False,
                # No cookie is kept: a receiver's session cookie, sent back with the
                # next request, came back echoed in error answers that the spool keeps.
                cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
            )
        )
        # httpx logs each request's URL at INFO, and httpcore every header it receives
        # at DEBUG: its loggers exist once httpcore is imported (above, not left to httpx).
        self._log_filter = RedactingFilter(redact)
        self._http_loggers = [
            logging.getLogger(name)
            for name in list(logging.root.manager.loggerDict)
            if name == "httpx" or name.startswith("httpcore")
        ]
        for logger in self._http_loggers:
            logger.addFilter(self._log_filter)

    def post(
        self,
        url: httpx.URL | str,
        content: bytes,
        headers: Mapping[str, str],
        *,
        judge: Callable[[httpx.Response], Verdict],
    ) -> Verdict:
        """POST ``content`` and ``judge`` the answer; network failures are retryable."""
        with self._clients.deadline(self._timeout) as lane:
            request = lane.client.build_request(
                "POST", url, content=content, headers=dict(headers), extensions=lane.extensions
            )
            try:
                response = self._read_bounded(lane.client, request)
            except httpx.HTTPError as exc:
                if lane.cut_off or isinstance(exc, httpx.TimeoutException):
                    return Verdict("retry", error=f"timed out after {self._timeout:g}s")
                error = f"{type(exc).__name__}: {exc}"
                return Verdict("retry", error=self._redact.excerpt(error, MAX_ERROR_BYTES))
        return judge(response)

    def _read_bounded(self, client: httpx.Client, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the answer with at most ``MAX_RESPONSE_BYTES`` of its body.

        A huge body would fill memory, and one trickling in without end is cut off with
        the rest of the request at its deadline. The status is what decides; the body
        only explains it, so a body that breaks off does not make an accepted batch
        look failed.
        """
        response = client.send(request, stream=True)
        body = bytearray()
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) >= MAX_RESPONSE_BYTES:
                    break  # closing the response then drops the connection
        except httpx.HTTPError:
            pass  # the body broke off; the status came whole (a 2xx was accepted)
        finally:
            response.close()
        headers = response.headers.copy()
        headers.pop("content-encoding", None)  # the body read is decoded already
        return httpx.Response(
            response.status_code, headers=headers, content=bytes(body), request=request
        )

    def close(self) -> None:
        """Close the connection pools, and stop masking these secrets in the logs of httpx
        and httpcore."""
        self._clients.close()
        for logger in self._http_loggers:
            logger.removeFilter(self._log_filter)
