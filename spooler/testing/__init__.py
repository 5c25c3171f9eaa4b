"""What the demo and the tests use, not the product: a local scriptable HTTP receiver,
and (``spooler.testing.outage``) the staged outage of ``spooler demo --outage``.

Not imported by ``import spooler``; shipped in the wheel because ``spooler demo`` runs
against it.
"""

from .receiver import Receiver, RecordedRequest

__all__ = ["Receiver", "RecordedRequest"]
