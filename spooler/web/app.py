"""``spooler web``'s application and its runner.

- Pages are GETs, and a GET changes nothing. Actions are POSTs to ``/actions/NAME``
  carrying the process's CSRF token (a page of another site cannot read it), refused
  from another origin; each asks first, showing how many events it will touch.
- Without a token the dashboard listens on loopback only (``build_web_config``), and
  answers only requests addressed to a loopback name, so that a web page cannot reach
  it through a DNS name made to point at 127.0.0.1. With a token, every page but the
  login asks for it (a cookie the login sets, or ``Authorization: Bearer``).
- Every answer forbids scripts but the dashboard's own file, framing and caching.

The spool's calls block, so each request is answered in a worker thread: the event
loop of the HTTP server (``spooler.serve.http``, the one ``spooler serve`` runs) only
parses and writes.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.cookies import CookieError, SimpleCookie
from importlib.resources import files
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from ..config import WebConfig
from ..config.serve import is_loopback
from ..errors import ConfigError, SpoolerError, UnknownEventError
from ..events import events_phrase
from ..history import HistoryPoint
from ..serve.http import Answer, HttpServer, Limits, Request, Response
from ..spool import Spool
from .actions import ACTIONS, Selection, confirm_page, perform, preview
from .dead import PAGE_SIZE, Filters, dead_event_page, dead_letters, dead_list, dead_summary
from .markup import Markup, html
from .pages import DONE, RANGES, charts, frame, overview, overview_table
from .snapshots import Snapshot

__all__ = ["Dashboard", "WebApp"]

log = logging.getLogger("spooler.web")

COOKIE = "spooler_web"
BODY_LIMIT = 256 * 1024  # a form: a page of picked ids at most
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = (
    ("Content-Security-Policy", _POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    # (no-referrer would make the browser send "Origin: null" with the forms' POSTs)
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)
_STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_LOOPBACK_NAMES = {"localhost", "::1"}
#: Seconds an action's notice is shown for, from when it ran: the page it goes back to,
#: not that address opened again later (from the browser's history).
NOTICE_FOR = 60


def _text(status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, text.encode(), HEADERS + headers, "text/plain; charset=utf-8")


def _page(markup: Markup, status: int = 200) -> Response:
    return Response(status, markup.encode(), HEADERS, "text/html; charset=utf-8")


def _redirect(location: str, *headers: tuple[str, str]) -> Response:
    return _text(303, f"see {location}", (("Location", location), *headers))


def _is_loopback_name(host: str) -> bool:
    return host in _LOOPBACK_NAMES or host.startswith("127.")


class WebApp:
    """Answers the dashboard's requests (``HttpServer``'s application).

    ``counting`` is the spool the background readings use (default: ``spool``): opened a
    second time, a SQLite file gives them a connection of their own, so a page never
    waits behind a count of a large queue.
    """

    def __init__(
        self,
        spool: Spool,
        config: WebConfig,
        *,
        counting: Spool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._spool = spool
        self._config = config
        self._clock = clock
        self._csrf = secrets.token_urlsafe(32)
        # The login cookie: derived from the token, so the token itself is never stored
        # in a browser, and a new token logs every browser out.
        self._session = (
            hmac.new(config.token.encode(), b"spooler web session", hashlib.sha256).hexdigest()
            if config.token
            else None
        )
        counting = counting or spool
        self.status = Snapshot(counting.status)
        self.summary = Snapshot(counting.dead_letters.summary)
        # The charts of each range, read as the counts are: a week's barely moves.
        self.history = {
            span: Snapshot(functools.partial(self._history, counting, seconds + step))
            for span, (seconds, step) in RANGES.items()
        }
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="spooler-web")
        folder = files(__package__).joinpath("static")
        self._static = {name: folder.joinpath(name).read_bytes() for name in _STATIC}

    def _history(self, spool: Spool, seconds: float) -> list[HistoryPoint]:
        now = self._clock()
        return spool.store.history(since=now - seconds, now=now)

    # -- what HttpServer asks --------------------------------------------------------

    def body_limit(self, path: str) -> int:
        """A form's largest body."""
        return BODY_LIMIT

    def too_large(self, path: str) -> Response:
        """The answer to a body over ``BODY_LIMIT``."""
        return _text(413, "the request body is too large")

    def handle(self, request: Request, answer: Answer) -> None:
        """Answer the request in a worker thread."""

        def answered(work: asyncio.Future[Response]) -> None:
            try:
                response = work.result()
            except Exception as exc:  # a bug: the server answers 500
                answer(exc)
            else:
                answer(response)

        asyncio.wrap_future(self._pool.submit(self.answer, request)).add_done_callback(answered)

    def close(self) -> None:
        """Wait for the requests being answered; answer no more."""
        self._pool.shutdown(wait=True)

    # -- routes ----------------------------------------------------------------------

    def answer(self, request: Request) -> Response:
        """The answer to one request (in a worker thread)."""
        try:
            return self._route(request)
        except UnknownEventError as exc:
            return self._error(404, str(exc))
        except ConfigError as exc:
            return self._error(400, str(exc))
        except SpoolerError as exc:
            log.warning("%s %s: %s", request.method, request.path, exc)
            return self._error(503, f"the spool cannot be read now: {exc}")

    def _route(self, request: Request) -> Response:
        if not self._addressed_to_us(request):
            return _text(403, "this dashboard answers only requests addressed to loopback")
        path, method = request.path, request.method
        if path.startswith("/static/") and path.removeprefix("/static/") in _STATIC:
            name = path.removeprefix("/static/")
            return Response(200, self._static[name], HEADERS, _STATIC[name])
        if path == "/login":
            return self._login(request)
        if not self._logged_in(request):
            return _redirect("/login") if method == "GET" else _text(403, "log in first")
        query = parse_qs(request.query)
        if path.startswith("/actions/") and method != "POST":
            return _text(405, "an action is a POST from its page", (("Allow", "POST"),))
        if method == "GET":
            if path == "/":
                return self._overview(query)
            if path == "/dead":
                return self._dead(query)
            if path.startswith("/dead/event/"):
                return self._event(unquote(path.removeprefix("/dead/event/")))
            return self._error(404, f"no page at {path}")
        if path.startswith("/actions/"):
            return self._action(path.removeprefix("/actions/"), request)
        return _text(405, "pages are read with GET, actions are POSTs", (("Allow", "GET"),))

    def _overview(self, query: dict[str, list[str]]) -> Response:
        span = query.get("range", ["hour"])[0]
        span = span if span in RANGES else "hour"
        part = query.get("part", [""])[0]
        if part != "charts":
            reading = self.status.get()
            table = overview_table(reading.value, reading.age(), self._csrf)
            if part == "table":
                return _page(table)
        now = self._clock()
        points = self.history[span].get().value
        if part == "charts":
            return _page(charts(points, span, now))
        body = overview(reading.value, reading.age(), points, span, self._csrf)
        return self._frame("Overview", "overview", body, query)

    def _dead(self, query: dict[str, list[str]]) -> Response:
        filters = Filters(query)
        part = query.get("part", [""])[0]
        if part != "list":
            summary = self.summary.get()
            if part == "summary":
                return _page(dead_summary(summary.value, summary.age()))
        page = self._spool.dead_letters.page(
            destination=filters.destination,
            reason=filters.reason,
            status=filters.status,
            limit=PAGE_SIZE + 1,  # the one over: another page follows that way
            before=filters.before,
            after=filters.after,
        )
        now = self._clock()
        if part == "list":
            return _page(dead_list(page, filters, self._csrf, now))
        body = dead_letters(summary.value, summary.age(), page, filters, self._csrf, now)
        return self._frame("Dead letters", "dead", body, query)

    def _event(self, event_id: str) -> Response:
        [event] = self._spool.dead_letters.inspect([event_id])
        body = dead_event_page(event, self._csrf, self._clock())
        return self._frame(f"Dead event {event_id}", "dead", body, {})

    def _action(self, name: str, request: Request) -> Response:
        if name not in ACTIONS:
            return self._error(404, f"no action {name}")
        form = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
        given = form.get("csrf", [""])[0]
        if not hmac.compare_digest(given.encode(), self._csrf.encode()) or not self._same_origin(
            request
        ):
            return _text(403, "refused: the form did not come from this dashboard (reload it)")
        back = form.get("back", ["/"])[0]
        if not back.startswith("/") or back.startswith("//") or "\\" in back:
            back = "/"  # only a page of this dashboard
        selection = Selection.from_form(form, dead=ACTIONS[name][1])
        # Only the confirmation's form carries the key that bounds what was counted.
        if form.get("confirmed", [""])[0] != "1" or selection.last_key is None:
            count, bounded = preview(self._spool, name, selection)
            body = confirm_page(name, bounded, count, self._csrf, back)
            return self._frame(f"{ACTIONS[name][0]}?", "", body, {})
        count = perform(self._spool, name, selection)
        log.info("%s: %s (%s)", name, events_phrase(count), selection.describe())
        self.status.stale()
        self.summary.stale()
        at = int(self._clock())
        done = urlencode(
            {"done": name, "count": count, "at": at, "sig": self._notice_sig(name, count, at)}
        )
        path, _, rest = back.partition("#")
        return _redirect(
            f"{path}{'&' if '?' in path else '?'}{done}" + (f"#{rest}" if rest else "")
        )

    # -- the login, the checks -------------------------------------------------------

    def _login(self, request: Request) -> Response:
        if self._config.token is None:
            return _redirect("/")
        failed = False
        if request.method == "POST":
            form = parse_qs(request.body.decode("utf-8", "replace"))
            given = form.get("token", [""])[0].encode()
            if hmac.compare_digest(given, self._config.token.encode()):
                cookie = f"{COOKIE}={self._session}; Path=/; HttpOnly; SameSite=Strict"
                return _redirect("/", ("Set-Cookie", cookie))
            failed = True
        body = html(
            '{}<form method="post" action="/login" class="login"><label>Token <input'
            ' type="password" name="token" autocomplete="current-password" autofocus></label>'
            ' <button type="submit">Log in</button></form>',
            html('<p class="alert">That is not the token.</p>') if failed else "",
        )
        page = frame("Log in", "", body, spool="")  # nothing of the spool before the token
        return _page(page, 403 if failed else 200)

    def _logged_in(self, request: Request) -> bool:
        if self._config.token is None or self._session is None:
            return True
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
        if hmac.compare_digest(bearer, self._config.token.encode()):
            return True
        try:
            cookies = SimpleCookie(request.headers.get("cookie", ""))
        except CookieError:
            return False
        given = cookies[COOKIE].value if COOKIE in cookies else ""
        return hmac.compare_digest(given.encode(), self._session.encode())

    def _addressed_to_us(self, request: Request) -> bool:
        """Without a token: only requests to a loopback name (or the address listened on)."""
        if self._config.token is not None:
            return True
        host = urlsplit("//" + request.headers.get("host", "")).hostname or ""
        return _is_loopback_name(host) or host == self._config.host

    @staticmethod
    def _same_origin(request: Request) -> bool:
        """Whether a POST came from a page of this dashboard, where the browser says."""
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return False
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return origin is None
        return urlsplit(origin).netloc == request.headers.get("host")

    # -- page helpers ----------------------------------------------------------------

    def _frame(
        self, title: str, active: str, body: Markup, query: dict[str, list[str]]
    ) -> Response:
        notice = None
        done, count, at, sig = (query.get(name, [""])[0] for name in ("done", "count", "at", "sig"))
        if done in DONE and count.isdigit() and at.isdigit():
            fresh = 0 <= self._clock() - int(at) <= NOTICE_FOR
            expected = self._notice_sig(done, int(count), int(at))
            if fresh and hmac.compare_digest(sig.encode(), expected.encode()):
                notice = DONE[done].format(events_phrase(int(count)))
        return _page(frame(title, active, body, spool=self._spool.path, notice=notice))

    def _notice_sig(self, done: str, count: int, at: int) -> str:
        """What signs the notice of an action this dashboard ran (``done`` on ``count``
        events at ``at``): keyed by the CSRF token, which a link made elsewhere cannot
        know, so that no link can make a page claim an action that was not run."""
        message = f"{done}:{count}:{at}".encode()
        return hmac.new(self._csrf.encode(), message, hashlib.sha256).hexdigest()[:32]

    def _error(self, status: int, message: str) -> Response:
        body = html('<p class="alert">{}</p><p><a href="/">Back to the overview</a></p>', message)
        return _page(frame("Not done", "", body, spool=self._spool.path), status)


class Dashboard:
    """``spooler web``: one spool's dashboard, until ``stop``.

    Usage::

        dashboard = Dashboard(spool, WebConfig(port=8421))
        dashboard.run(ready=lambda port: print("listening on", port))  # until stop()
    """

    def __init__(
        self,
        spool: Spool,
        config: WebConfig,
        *,
        counting: Spool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._spool = spool
        self._counting = counting
        self._config = config
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_asked = False

    def run(self, *, ready: Callable[[int], None] | None = None) -> None:
        """Serve until ``stop``; ``ready(port)`` is called once it listens."""
        asyncio.run(self._serve(ready))

    def stop(self) -> None:
        """Stop: answer the requests in progress, return from ``run``. Safe from a signal
        handler or another thread."""
        self._stop_asked = True
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    async def _serve(self, ready: Callable[[int], None] | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        app = WebApp(self._spool, self._config, counting=self._counting, clock=self._clock)
        server = HttpServer(app, Limits())
        host, port = self._config.host, self._config.port
        try:
            await server.start(host, port)
        except OSError as exc:
            app.close()
            raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from None
        # The first page need not wait for the first count of a large queue.
        for snapshot in (app.status, app.summary, app.history["hour"]):
            snapshot.start()
        shown = f"[{host}]" if ":" in host else host
        log.info("dashboard on http://%s:%d/ for %s", shown, server.port, self._spool.path)
        if not is_loopback(host):
            log.warning(
                "listening beyond loopback on plain HTTP: the token and the pages (the events'"
                " payloads) cross the network unencrypted; put TLS in front (a reverse proxy),"
                " or listen on loopback and reach it through ssh -L"
            )
        if ready is not None:
            ready(server.port)
        if self._stop_asked:
            self._stopping.set()
        await self._stopping.wait()
        await server.stop()
        await asyncio.to_thread(app.close)
