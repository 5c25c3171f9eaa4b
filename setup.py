"""Finds the packages, so that a new subpackage can never be left out of the wheel.

Everything else is in pyproject.toml. The command line lives in ``cli/`` (the project's
layout) but installs as ``spooler_cli`` (``cli`` would clash with other projects), and
pyproject's ``packages.find`` cannot install a folder under another name.
"""

from setuptools import find_namespace_packages, find_packages, setup

cli_packages = find_packages(include=["cli", "cli.*"])
setup(
    packages=[
        # Namespace packages too: the dashboard's static files are a folder without an
        # __init__.py (spooler.web.static), which setuptools warns of unless it is listed.
        *find_namespace_packages(include=["spooler", "spooler.*"], exclude=["*.__pycache__"]),
        *("spooler_cli" + name.removeprefix("cli") for name in cli_packages),
    ],
    package_dir={"spooler_cli": "cli"},
)
