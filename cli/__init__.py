"""The ``spooler`` command line (installed as the ``spooler_cli`` package)."""
