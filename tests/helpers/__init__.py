"""What the tests share, one module per job: ``processes`` (ports, waiting, programs),
``cli`` (the command line as a subprocess), ``spools`` (draining and reading a spool) and
``reliability`` (the campaign's report rows). The fixtures stay in conftest.py."""
