"""The exported names are exactly the intended ones, and the error tree is as documented."""

from __future__ import annotations

import spooler
from spooler import errors


def test_exported_names() -> None:
    assert sorted(spooler.__all__) == sorted(
        [
            "ConfigError",
            "InvalidEventError",
            "NotDurableError",
            "RetryPolicy",
            "Spool",
            "SpoolFullError",
            "SpoolStatus",
            "SpoolerError",
            "StoreError",
            "StoreUnreachableError",
            "UnknownEventError",
            "__version__",
        ]
    )
    for name in spooler.__all__:
        assert getattr(spooler, name) is not None


def test_every_error_is_a_spooler_error() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), spooler.SpoolerError)
        assert name in (errors.__doc__ or "")


def test_clients_exported() -> None:
    import spooler.clients

    assert sorted(spooler.clients.__all__) == ["Amplitude", "Datalyr", "PostHog", "Segment"]
