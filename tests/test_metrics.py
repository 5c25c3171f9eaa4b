"""spooler drain --metrics-port: Prometheus text format and /healthz, scraped for real."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
from helpers.cli import spooler_cmd, start_drain
from helpers.processes import free_port, wait_until
from prometheus_client.parser import text_string_to_metric_families

from spooler import Spool
from spooler.config import build_drain_config
from spooler.drain import Drain, Mode
from spooler.metrics import DrainMetrics
from spooler.testing import Receiver


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_drain_serves_metrics_and_healthz(db: Path, receiver: Receiver) -> None:
    port = free_port()
    # Given 5 events, one of them poison, and a receiver that fails once first
    events = [f'{{"n": {n}, "bad": {str(n == 2).lower()}}}' for n in range(5)]
    assert spooler_cmd("enqueue", "--db", str(db), *events).returncode == 0
    receiver.fail_next(503)
    receiver.reject = lambda event: event["bad"]
    # When a daemon drain with metrics works through them
    drain = start_drain(
        db,
        receiver.url,
        "--metrics-port",
        str(port),
        "--backoff-base",
        "0.01",
        "--poll-interval",
        "0.05",
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(lambda: _healthy(port), timeout=20)
        assert receiver.wait_for(lambda r: len(r.delivered) == 4, timeout=20)
        assert wait_until(
            lambda: scrape(port).get(("spooler_queued", (("destination", "default"),))) == 0,
            timeout=20,
        )
        samples = scrape(port)
    finally:
        drain.send_signal(signal.SIGTERM)
        _, err = drain.communicate(timeout=30)
    # Then the counters, the histogram and the gauges tell the story
    dest = (("destination", "default"),)
    assert samples[("spooler_delivered_total", dest)] == 4
    assert samples[("spooler_retries_total", dest)] == 5
    assert (
        samples[("spooler_dead_total", (("destination", "default"), ("reason", "rejected")))] == 1
    )
    assert samples[("spooler_dead", dest)] == 1
    assert samples[("spooler_request_seconds_count", dest)] >= 4
    assert drain.returncode == 0, err


def _healthy(port: int) -> bool:
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200 and answer.text == "ok\n"


def test_failed_requests_in_a_row_rise_during_an_outage_and_fall_back(
    spool: Spool, receiver: Receiver
) -> None:
    metrics = DrainMetrics(spool.store)
    config = build_drain_config(
        {}, destination_flags={"url": receiver.url}, drain_flags={"poll_interval": 0.05}
    )
    labels = {"destination": "default"}
    spool.enqueue({"n": 1})
    # Given a receiver that is down
    receiver.fail_next(503, headers={"Retry-After": "60"})
    Drain(spool.store, config, metrics=metrics).run(Mode.ONCE)
    assert metrics.registry.get_sample_value("spooler_failed_requests_in_a_row", labels) == 1
    # And a drain that starts later, with metrics of its own, shows the failure from the start
    restarted = DrainMetrics(spool.store)
    Drain(spool.store, config, metrics=restarted)
    assert restarted.registry.get_sample_value("spooler_failed_requests_in_a_row", labels) == 1
    # When it is back (and the operator says so)
    spool.retry_now(everything=True)
    Drain(spool.store, config, metrics=metrics).run(Mode.UNTIL_EMPTY, max_time=30)
    assert metrics.registry.get_sample_value("spooler_failed_requests_in_a_row", labels) == 0
    assert len(receiver.delivered) == 1


def test_a_drains_counters_are_there_at_zero_before_its_first_event(
    spool: Spool, receiver: Receiver
) -> None:
    # Given a drain with metrics that has sent nothing yet
    metrics = DrainMetrics(spool.store)
    config = build_drain_config({}, destination_flags={"url": receiver.url})
    Drain(spool.store, config, metrics=metrics)
    # Then its counters show at 0 for its destination (each dead-letter reason too): a
    # series that appeared only at the first dead letter would never be seen to rise,
    # and the documented alert on increase(spooler_dead_total[1h]) would miss it
    labels = {"destination": "default"}
    assert metrics.registry.get_sample_value("spooler_delivered_total", labels) == 0
    assert metrics.registry.get_sample_value("spooler_retries_total", labels) == 0
    for reason in ("rejected", "too_large", "max_attempts", "max_age"):
        dead = {**labels, "reason": reason}
        assert metrics.registry.get_sample_value("spooler_dead_total", dead) == 0, reason
