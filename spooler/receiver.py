"""Moved to ``spooler.testing``: this name stays only while test suites that are not
yet moved over import it from here."""

from .testing.receiver import Receiver, RecordedRequest

__all__ = ["Receiver", "RecordedRequest"]
