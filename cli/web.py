"""``spooler web``: run the operator's dashboard from the command line."""

from __future__ import annotations

import signal

import click

from spooler.config import build_web_config
from spooler.service import ServiceOptions, configure_logging, stop_signals

from .options import Options, common_options

__all__ = ["web"]


@click.command()
@click.option("--host", help="Address to listen on [default 127.0.0.1; others need a token].")
@click.option("--port", type=click.IntRange(0, 65535), help="Port to listen on [default 8421].")
@click.option(
    "--token",
    help="A token to log in with; needed to listen beyond loopback [env SPOOLER_WEB_TOKEN;"
    " keep it out of the command line].",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Leave out log lines below this level (info: the actions taken).",
)
@common_options
def web(
    opts: Options, host: str | None, port: int | None, token: str | None, log_level: str
) -> None:
    """An operator's dashboard in the browser: each destination's backlog and pause,
    charts of the last 15 minutes, hour, day or week (kept by running drains), the dead
    letters, and replay, purge, hold, release and retry-now, each confirmed with its
    count.

    SIGTERM/SIGINT/SIGHUP stop it.
    """
    from spooler.web import Dashboard

    config = build_web_config(opts.raw_config, flags={"host": host, "port": port, "token": token})
    opts.warn_of_config_mistakes()
    configure_logging(ServiceOptions(log_level=log_level))
    # A second connection for the counts read in the background (see WebApp).
    with opts.open_spool(create=False) as spool, opts.open_spool(create=False) as counting:
        dashboard = Dashboard(spool, config, counting=counting)
        for signum in stop_signals():
            signal.signal(signum, lambda *_: dashboard.stop())
        dashboard.run()  # its log says where it listens
