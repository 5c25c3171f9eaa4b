"""The circuit breaker: with a fake clock and a random source that always picks the top
of the jitter window, so every wait is known."""

from __future__ import annotations

import math
import random
import threading

import pytest

from spooler.breaker import CircuitBreaker
from spooler.retry import RetryPolicy


class TopOfWindow(random.Random):
    """Full jitter that always waits the longest it may."""

    def uniform(self, a: float, b: float) -> float:
        return b


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def breaker_for(clock: FakeClock, **policy: float) -> CircuitBreaker:
    return CircuitBreaker("d", RetryPolicy(**policy), rng=TopOfWindow(), clock=clock)


def admit_from_another_thread(breaker: CircuitBreaker) -> float:
    result: list[float] = []
    thread = threading.Thread(target=lambda: result.append(breaker.admit()))
    thread.start()
    thread.join()
    return result[0]


def fail(breaker: CircuitBreaker, retry_after: float | None = None) -> None:
    breaker.record(failed=True, epoch=breaker.epoch, retry_after=retry_after)


def test_a_closed_breaker_admits_every_thread(clock: FakeClock) -> None:
    breaker = breaker_for(clock)
    assert breaker.admit() == 0.0 and not breaker.probing()
    assert admit_from_another_thread(breaker) == 0.0


def test_a_failure_pauses_every_thread_then_exactly_one_probes(clock: FakeClock) -> None:
    # Given a destination whose request just failed
    breaker = breaker_for(clock, backoff_base=10.0)
    fail(breaker)
    # Then nobody may send for the backoff
    assert breaker.admit() == 10.0
    clock.now = 4.0
    assert admit_from_another_thread(breaker) == 6.0
    # When it has passed, the first thread to ask probes, and the others wait for it
    clock.now = 10.0
    assert breaker.admit() == 0.0
    assert breaker.probing()
    assert breaker.admit() == 0.0  # the prober itself may go on (bisection, next batch)
    assert admit_from_another_thread(breaker) == math.inf
    # Once the probe's claim is settled, another thread may probe in its turn
    breaker.leave()
    assert not breaker.probing()
    assert admit_from_another_thread(breaker) == 0.0


def test_failures_in_a_row_lengthen_the_pause_up_to_the_cap(clock: FakeClock) -> None:
    breaker = breaker_for(clock, backoff_base=1.0, backoff_cap=4.0)
    waits = []
    for _ in range(5):
        fail(breaker)
        waits.append(breaker.admit())
        clock.now += waits[-1]
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert breaker.failures == 5


def test_requests_in_flight_when_it_opened_do_not_lengthen_the_pause(clock: FakeClock) -> None:
    # Given four requests in flight when the destination goes down
    breaker = breaker_for(clock, backoff_base=1.0)
    epoch = breaker.epoch
    # When all four fail
    for _ in range(4):
        breaker.record(failed=True, epoch=epoch)
    # Then that is one failure, not four: the pause is the first step of the schedule
    assert breaker.failures == 1
    assert breaker.admit() == 1.0


def test_retry_after_is_the_minimum_pause(clock: FakeClock) -> None:
    breaker = breaker_for(clock, backoff_base=1.0)
    fail(breaker, retry_after=30.0)
    assert breaker.admit() == 30.0


def test_an_answer_that_is_not_a_retryable_failure_closes_it(clock: FakeClock) -> None:
    breaker = breaker_for(clock, backoff_base=1.0)
    fail(breaker)
    fail(breaker)
    clock.now = 100.0
    assert breaker.admit() == 0.0  # the probe
    breaker.record(failed=False, epoch=breaker.epoch)
    assert breaker.failures == 0
    assert admit_from_another_thread(breaker) == 0.0
    # And the schedule starts again from its first step
    fail(breaker)
    assert breaker.admit() == 1.0


def test_a_destination_that_was_failing_is_probed_first(clock: FakeClock) -> None:
    breaker = CircuitBreaker("d", RetryPolicy(), rng=TopOfWindow(), clock=clock, failures=1)
    assert breaker.pause_left() == 0.0
    assert breaker.admit() == 0.0 and breaker.probing()
    assert admit_from_another_thread(breaker) == math.inf
    assert breaker.epoch == 0  # it did not open in this run
    assert breaker.record(failed=False, epoch=breaker.epoch)  # closed: a change to keep
    assert admit_from_another_thread(breaker) == 0.0
    assert not breaker.record(failed=False, epoch=breaker.epoch)  # no change


def test_a_resumed_pause_is_waited_out_and_its_failures_go_on_counting(clock: FakeClock) -> None:
    # Given the state an earlier drain left: three failures, 20 s of the pause to run
    breaker = CircuitBreaker(
        "d",
        RetryPolicy(backoff_base=1.0),
        rng=TopOfWindow(),
        clock=clock,
        failures=3,
        paused_for=20.0,
    )
    # Then nobody sends before the pause ends, and then one thread probes
    assert breaker.admit() == breaker.pause_left() == 20.0
    clock.now = 20.0
    assert breaker.admit() == 0.0 and breaker.probing()
    # When the probe fails too, that is the fourth failure in a row: 2**3 s
    assert breaker.record(failed=True, epoch=breaker.epoch)
    assert breaker.failures == 4 and breaker.pause_left() == 8.0
    # And a failure sent before that one opened it changes nothing
    assert not breaker.record(failed=True, epoch=0)


def test_probe_now_ends_the_pause_for_one_probe(clock: FakeClock) -> None:
    breaker = breaker_for(clock, backoff_base=60.0)
    fail(breaker)
    breaker.probe_now()
    assert breaker.admit() == 0.0
    assert admit_from_another_thread(breaker) == math.inf
    assert breaker.failures == 1  # still failing until an answer says otherwise


def test_following_another_drain_takes_up_a_longer_pause_and_a_recovery(
    clock: FakeClock,
) -> None:
    # Given a breaker that never failed, and another drain whose requests failed
    breaker = breaker_for(clock, backoff_base=10.0)
    # When it follows that drain's kept pause of 30 s after 3 failures
    assert breaker.follow(3, 30.0) == "paused"
    # Then it pauses as long, counts as many failures, and ignores requests sent before
    assert (breaker.admit(), breaker.failures, breaker.epoch) == (30.0, 3, 1)
    assert not breaker.record(failed=True, epoch=0)
    # A pause that ends no later than its own (its own, read back) changes nothing
    assert breaker.follow(3, 30.2) == "" and breaker.follow(1, 5.0) == ""
    assert breaker.follow(4, 60.0) == "paused" and breaker.admit() == 60.0
    # When the other drain gets an answer, it resumes at once, without a probe of its own
    assert breaker.follow(0, 0.0) == "resumed"
    assert (breaker.admit(), breaker.failures) == (0.0, 0)
    assert admit_from_another_thread(breaker) == 0.0
    assert breaker.follow(0, 0.0) == ""


def test_a_pause_that_is_over_is_not_taken_up(clock: FakeClock) -> None:
    breaker = breaker_for(clock)
    assert breaker.follow(2, 0.0) == "" and breaker.failures == 0
