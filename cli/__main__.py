"""``python -m spooler_cli``: the same as the ``spooler`` command."""

from .main import cli

cli(prog_name="spooler")
