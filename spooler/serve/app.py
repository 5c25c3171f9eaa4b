"""The relay: routes each ingest request to its API, checks its key, commits its events,
and answers only once they are committed.

A request's events are checked (as their API would), stored without the key, and
committed in one transaction, shared with the requests that arrived meanwhile
(``Committer``). A spool that cannot take them (full: ``max_events`` / ``max_bytes``;
failing: a full disk, an I/O error, a commit that could not be flushed) gets the
answer that makes the SDK send again later, never a success.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

from ..config import ServeConfig
from ..errors import ConfigError, InvalidEventError, SpoolerError
from ..events import check_destination_name, encode_events
from ..spool import Spool
from .amplitude import Amplitude
from .apis import API, Datalyr, Events, Refused, json_response
from .commits import Committer
from .counted_warnings import CountedWarnings
from .http import Answer, HttpServer, Limits, Request, Response
from .posthog import PostHog
from .segment import Segment
from .spool_refusals import SpoolRefusals
from .stats import REPORT_INTERVAL, Metrics, ServeStats
from .wrong_keys import WrongKeys

__all__ = ["UNROUTED", "IngestApp", "Relay"]

log = logging.getLogger("spooler.serve")

_NOT_FOUND_LIMIT = 64 * 1024  # a body to a path no API serves is read, then refused
# The API a refusal is counted under when no API serves its path (or its destination).
UNROUTED = "unrouted"
SUMMARY_INTERVAL = 60.0
HEARTBEAT_INTERVAL = 0.1  # seconds between the loop's signs of life (Relay.run's heartbeat)


class IngestApp:
    """Answers the requests of every API (``HttpServer``'s application)."""

    def __init__(
        self,
        spool: Spool,
        config: ServeConfig,
        committer: Committer,
        stats: ServeStats,
        wrong_keys: WrongKeys,
        spool_refusals: SpoolRefusals,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._spool = spool
        self._config = config
        self._committer = committer
        self._stats = stats
        self._wrong_keys = wrong_keys
        self._spool_refusals = spool_refusals
        self._clock = clock
        self._routes: dict[str, API] = {}
        # The answer to each API whose destination the config does not define: its
        # events would wait in the spool for a drain that never comes.
        self._unrouted: dict[str, Response] = {}
        for api in (Amplitude(config.min_id_length), Segment(), PostHog(), Datalyr()):
            for path in api.paths:
                self._routes[path] = api
            if config.refuses(api.name):
                error = _unrouted_error(api.name, config.destinations[api.name])
                self._unrouted[api.name] = json_response(404, {"error": error})
        self._events = Events()

    def _route(self, path: str) -> tuple[API, str] | Response:
        """The API serving ``path``, and the destination its events go to."""
        api = self._routes.get(path)
        if api is not None:
            refusal = self._unrouted.get(api.name)
            if refusal is not None:
                return refusal
            return api, self._config.destinations[api.name]
        name = path.removeprefix(Events.prefix)
        if name == path:
            return json_response(404, {"error": f"no ingest API at {path}"})
        try:
            check_destination_name(name)
        except ConfigError as exc:
            return json_response(404, {"error": str(exc)})
        if self._config.configured is not None and name not in self._config.configured:
            return json_response(404, {"error": f"no destination {name!r} is configured"})
        return self._events, name

    def body_limit(self, path: str) -> int:
        """The limit of the API serving ``path``."""
        route = self._route(path)
        return _NOT_FOUND_LIMIT if isinstance(route, Response) else route[0].body_limit(path)

    def too_large(self, path: str) -> Response:
        """The API's own answer to a body over its limit."""
        route = self._route(path)
        if isinstance(route, Response):
            self._stats.refuse(UNROUTED, route.status)
            return route
        self._stats.refuse(route[0].name, 413)
        return route[0].too_large(f"the body is over {route[0].body_limit(path)} bytes")

    def handle(self, request: Request, answer: Answer) -> Response | None:
        """Read and check the request's events, and commit them: the API's answer at once
        for a request refused, else None, and ``answer`` once the commit has returned."""
        if request.path == "/healthz" and request.method == "GET":
            return json_response(200, {"ok": True})
        route = self._route(request.path)
        if isinstance(route, Response):
            self._stats.refuse(UNROUTED, route.status)
            return route
        api, destination = route
        if request.method != "POST":
            self._stats.refuse(api.name, 405)
            return Response(405, b'{"error":"POST only"}', (("Allow", "POST"),))
        now = self._clock()
        try:
            ingest = api.read(request, now)
            if not self._key_accepted(destination, ingest.key):
                refusal = api.unauthorized()
                self._wrong_keys.refused(api.name, request.path, refusal.status)
                raise Refused(refusal, "wrong or missing key")
            texts = self._encode(api, ingest.events)
        except Refused as refused:
            log.debug("%s %s refused: %s", request.method, request.path, refused.reason)
            self._stats.refuse(api.name, refused.response.status)
            return refused.response
        if not texts:
            return api.accepted(request, ingest, [], now)

        def committed(outcome: list[str] | Exception) -> None:
            if isinstance(outcome, SpoolerError):
                self._spool_refusals.refused(f"{request.method} {request.path}", str(outcome))
                self._stats.refuse(api.name, 503)
                answer(api.unavailable(f"the spool cannot take events now: {outcome}"))
            elif isinstance(outcome, Exception):  # a bug: the server answers 500
                answer(outcome)
            else:
                self._stats.accept(api.name, destination, len(texts))
                answer(api.accepted(request, ingest, outcome, now))

        self._committer.submit([(destination, text) for text in texts], committed)
        return None

    def _key_accepted(self, destination: str, key: str | None) -> bool:
        """Whether ``key`` is the destination's or the serve token (where either is
        configured: else any key is taken, as on a loopback-only relay)."""
        accepted = [k for k in (self._config.token, self._config.keys.get(destination)) if k]
        if not accepted:
            return True
        given = (key or "").encode()
        # Compared in constant time, each: the key is a secret.
        return any(hmac.compare_digest(given, k.encode()) for k in accepted)

    def _encode(self, api: API, events: list[dict[str, Any]]) -> list[str]:
        limit = self._spool.max_event_bytes
        if api.max_event_bytes is not None:
            limit = min(limit, api.max_event_bytes)
        try:
            return encode_events(events, max_bytes=limit)
        except InvalidEventError as exc:  # "event 3: ...": the API's refusal names it
            raise api.refuse(str(exc)) from None


def _unrouted_error(api: str, name: str) -> str:
    """Why ``api``'s requests, for destination ``name``, are refused; how to route them."""
    return (
        f"no destination {name!r} is configured for the {api} API: define"
        f" [destinations.{name}] with type = '{api}', or route the API to a configured one"
        f" with serve.destinations.{api} in [serve]"
    )


class Relay:
    """``spooler serve``: one spool's HTTP ingest endpoint, until ``stop``.

    Usage::

        relay = Relay(spool, ServeConfig(port=8420))
        relay.run(ready=lambda port: print("listening on", port))  # until relay.stop()

    ``run``'s ``heartbeat`` is for a service's watchdog (``spooler.service.Service``):
    once the relay listens, its event loop calls it ten times a second, with how far the
    commit in progress is past ``commit_timeout`` (0: none is). A loop that stops
    turning, or a commit that is stuck, stops the calls or makes them overdue.
    """

    def __init__(
        self,
        spool: Spool,
        config: ServeConfig,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._spool = spool
        self._config = config
        self._clock = clock
        self._metrics = metrics
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_asked = False

    def run(
        self,
        *,
        ready: Callable[[int], None] | None = None,
        heartbeat: Callable[[float], None] | None = None,
    ) -> None:
        """Serve until ``stop``; ``ready(port)`` is called once it listens, then
        ``heartbeat(overdue)`` while the loop turns.

        Raises ``SpoolerError`` when a commit got stuck: the stop could not answer the
        requests waiting for it.
        """
        serving = self._serve(ready, heartbeat)
        try:
            # libuv's event loop, where installed (the serve extra installs it): its
            # sockets cost less per request (docs/performance.md).
            import uvloop
        except ImportError:
            asyncio.run(serving)
        else:
            uvloop.run(serving)

    def stop(self) -> None:
        """Stop accepting, answer the requests in progress, return from ``run``. Safe
        from a signal handler or another thread."""
        self._stop_asked = True
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    async def _serve(
        self, ready: Callable[[int], None] | None, heartbeat: Callable[[float], None] | None
    ) -> None:
        config = self._config
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        stats = ServeStats(f"{config.host}:{config.port}", metrics=self._metrics, clock=self._clock)
        committer = Committer(
            self._spool.commit_rows, on_commit=stats.commit, step=config.commit_timeout
        )
        wrong_keys = WrongKeys(log)
        spool_refusals = SpoolRefusals(log)
        app = IngestApp(
            self._spool, config, committer, stats, wrong_keys, spool_refusals, clock=self._clock
        )
        limits = Limits(
            header_timeout=config.header_timeout,
            body_timeout=config.body_timeout,
            idle_timeout=config.idle_timeout,
            max_connections=config.max_connections,
        )
        server = HttpServer(app, limits)
        try:
            await server.start(config.host, config.port)
        except OSError as exc:
            committer.close()
            raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc}") from None
        stats.listen = f"{config.host}:{server.port}"
        log.info("serving on http://%s for %s", stats.listen, self._spool.path)
        if ready is not None:
            ready(server.port)
        reporter = asyncio.create_task(self._report(stats, (wrong_keys, spool_refusals)))
        # Beats until the end: a stop that hangs is a hang too.
        beating = asyncio.create_task(_beat(heartbeat, committer)) if heartbeat else None
        try:
            if self._stop_asked:
                self._stopping.set()
            await self._stopping.wait()
            log.info("stopping: answering the requests in progress")
            await server.stop()
            reporter.cancel()
            wrong_keys.flush(stopping=True)
            spool_refusals.flush(stopping=True)
            if not await asyncio.to_thread(committer.close):
                # The spool does not answer: the last report could not be written either.
                raise SpoolerError(
                    f"a commit has not returned after {config.commit_timeout:g}s"
                    " (serve.commit_timeout): the requests waiting for it were not answered,"
                    " so their clients will send them again"
                )
            await asyncio.to_thread(
                self._spool.store.record_service, stats.listen, stats.report(stopped=True)
            )
            log.info("stopped: %s", stats.summary())
        finally:
            if beating is not None:
                beating.cancel()

    async def _report(self, stats: ServeStats, refusals: tuple[CountedWarnings[Any], ...]) -> None:
        """Keep the report in the spool (``ServeStats.due_report``); log a summary every
        minute, and the refusals (for a wrong key, for a spool that could not take the
        events) counted since their last warning a minute ago."""
        last_summary = self._clock()
        while True:
            report = stats.due_report()
            if report is not None:
                try:
                    await asyncio.to_thread(self._spool.store.record_service, stats.listen, report)
                except SpoolerError as exc:
                    log.warning("could not keep the report in the spool: %s", exc)
            if self._clock() - last_summary >= SUMMARY_INTERVAL:
                last_summary = self._clock()
                log.info("%s", stats.summary())
            for counted in refusals:
                counted.flush()
            await asyncio.sleep(REPORT_INTERVAL)


async def _beat(heartbeat: Callable[[float], None], committer: Committer) -> None:
    """Call ``heartbeat`` from the loop, ten times a second, with the committer's overdue."""
    while True:
        heartbeat(committer.overdue())
        await asyncio.sleep(HEARTBEAT_INTERVAL)
