"""``spooler serve``: run the local ingest endpoint from the command line."""

from __future__ import annotations

import click

from spooler.config import build_serve_config
from spooler.service import ServiceOptions, run_serve

from .options import Options, common_options
from .service import service_options

__all__ = ["serve"]


@click.command()
@click.option("--host", help="Address to listen on [default 127.0.0.1; others need a token].")
@click.option("--port", type=click.IntRange(0, 65535), help="Port to listen on [default 8420].")
@click.option(
    "--token",
    help="A key every request may present instead of its destination's own; needed to"
    " listen beyond loopback [env SPOOLER_SERVE_TOKEN; keep it out of the command line].",
)
@click.option(
    "--allow-unauthenticated",
    is_flag=True,
    default=None,
    help="Listen beyond loopback without a token (anyone who reaches the port can post).",
)
@service_options("debug: every refused request")
@common_options
def serve(
    opts: Options,
    host: str | None,
    port: int | None,
    token: str | None,
    allow_unauthenticated: bool | None,
    service: ServiceOptions,
) -> None:
    """Take events over HTTP, in the Amplitude, Segment, PostHog and Datalyr ingest APIs
    and POST /v1/events/DESTINATION, and answer each request once its events are
    committed to the spool. `spooler drain` delivers them. Where the config defines
    destinations, requests for one it does not define get 404.

    SIGTERM/SIGINT/SIGHUP stop accepting, answer the requests in progress and exit 0.
    """
    config = build_serve_config(
        opts.raw_config,
        flags={
            "host": host,
            "port": port,
            "token": token,
            "allow_unauthenticated": allow_unauthenticated,
        },
    )
    opts.warn_of_config_mistakes()
    run_serve(config, open_spool=opts.open_spool, options=service)
