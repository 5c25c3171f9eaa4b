"""What users install: the wheel and the sdist built from this checkout, installed the
way the README says, and the commands a newcomer runs first.

The rest of the suite runs on the editable install of ``make``, which finds every module
in the checkout whether or not the package would ship it. Here:

- ``python -m build`` makes the sdist from a copy of the checkout, then the wheel from
  that sdist (so the sdist is proven to build), and both are checked against the
  source tree: a module left out is named;
- the wheel goes into a fresh venv (not editable, the checkout out of reach) for an
  end-to-end run: ``spooler --help``, enqueue, a drain to a receiver on 127.0.0.1, the
  Datalyr drop-in client drained with no config file, ``dlq inspect``, ``spooler demo``
  (and a second of its ``--outage``);
- ``pipx install '.[metrics]'`` from the copy (pipx runs ``pip install`` on the
  path, as ``pip install .`` does), and its drain serves ``/metrics``;
- ``spooler serve`` and ``spooler web``: without their extra they name it; with ``pip
  install 'spooler[serve]'`` serve takes an SDK's request into the spool, and with
  ``'spooler[web]'`` the dashboard serves its pages and the files the wheel ships.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.processes import free_port, wait_until
from helpers.spools import rows

from spooler.testing import Receiver

ROOT = Path(__file__).resolve().parent.parent
# Source folders and the package each installs as.
PACKAGES = {"spooler": "spooler", "cli": "spooler_cli"}
# What a copy of the checkout leaves out: local state, not sources.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)
INSTALL_TIMEOUT = 600  # seconds: a cold pip cache on a slow mirror
# How build shows a warning of the backend ("WARNING Package ... is absent"), or a
# Python warning's class (BuildBackendWarning).
WARNING = re.compile(r"\bWARNING\b|\b\w+Warning\b")


def source_modules() -> set[str]:
    """Every module of the source tree, as a path relative to the checkout."""
    return {
        path.relative_to(ROOT).as_posix()
        for folder in PACKAGES
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    }


def installed_modules() -> set[str]:
    """Every module of the source tree, as the wheel names it (``cli/`` is ``spooler_cli/``)."""
    return {
        f"{PACKAGES[folder]}/{rest}"
        for folder, _, rest in (module.partition("/") for module in source_modules())
    }


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: nothing that points back into the checkout or
    its venv, and no SPOOLER_ settings of the test run."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not key.startswith("SPOOLER_")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return {**env, **extra}


def run(*command: str | Path, cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; fail the test, with its output, if it fails."""
    proc = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=kwargs.pop("env", clean_env()),  # type: ignore[arg-type]
        timeout=kwargs.pop("timeout", 120),  # type: ignore[arg-type]
        check=False,
    )
    assert proc.returncode == 0, (
        f"{' '.join(map(str, command))} exited {proc.returncode}\n"
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc


@dataclass(frozen=True)
class Built:
    """The sdist and the wheel built from a copy of the checkout (``source``)."""

    source: Path
    sdist: Path
    wheel: Path
    log: str  # what the build printed


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The checkout's sdist and wheel, as ``python -m build`` makes them."""
    work = tmp_path_factory.mktemp("build")
    # A copy: building writes build/ and *.egg-info next to the sources.
    source = work / "spooler"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    dist = work / "dist"
    build = run(
        sys.executable, "-m", "build", "--outdir", dist, source, cwd=work, timeout=INSTALL_TIMEOUT
    )
    [sdist] = dist.glob("*.tar.gz")
    [wheel] = dist.glob("*.whl")
    return Built(source, sdist, wheel, build.stdout + build.stderr)


def test_the_build_warns_of_nothing(built: Built) -> None:
    # A warning on every build hides the one that matters (setuptools warned that the
    # dashboard's static folder was not a listed package, and might one day be dropped).
    warnings = sorted({line.strip() for line in built.log.splitlines() if WARNING.search(line)})
    assert warnings == []


def test_the_wheel_holds_every_module_of_the_source_tree(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as wheel:
        shipped = set(wheel.namelist())
    missing = sorted(installed_modules() - shipped)
    assert not missing, (
        f"the wheel leaves out {len(missing)} modules of the source tree: {', '.join(missing)}"
        " (setup.py does not find them)"
    )


def test_the_wheel_marks_the_library_as_typed(built: Built) -> None:
    # PEP 561: without the marker, a type checker treats every spooler name as Any.
    with zipfile.ZipFile(built.wheel) as wheel:
        assert "spooler/py.typed" in wheel.namelist()


def test_the_sdist_holds_the_sources_and_builds(built: Built) -> None:
    # `python -m build` built the wheel from this sdist: that it exists proves the build.
    with tarfile.open(built.sdist) as sdist:
        shipped = {name.partition("/")[2] for name in sdist.getnames()}
    expected = {"pyproject.toml", "setup.py", "README.md", "spooler/py.typed"}
    missing = sorted((source_modules() | expected) - shipped)
    assert not missing, f"the sdist leaves out {', '.join(missing)}"


@pytest.fixture(scope="module")
def installed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a fresh venv with the wheel installed (not editable)."""
    venv = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", venv, cwd=venv)
    bin_dir = venv / "bin"
    run(bin_dir / "python", "-m", "pip", "install", "-q", built.wheel, cwd=venv, timeout=600)
    return bin_dir


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """An empty working directory: nothing of the checkout is importable from it."""
    home = tmp_path / "user"
    home.mkdir()
    return home


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver that rejects the events marked "bad" with 400."""
    with Receiver() as live:
        live.reject = lambda event: bool(event.get("bad"))
        yield live


def test_the_installed_wheel_enqueues_drains_and_dead_letters(
    installed: Path, user_dir: Path, receiver: Receiver
) -> None:
    spooler = installed / "spooler"
    # Given the installed package, not the checkout
    where = run(
        installed / "python",
        "-c",
        "import spooler, spooler_cli, spooler.destinations, spooler.clients;"
        "print(spooler.__file__)",
        cwd=user_dir,
    ).stdout
    assert Path(where).resolve().is_relative_to(installed.parent.resolve()), where
    helped = run(spooler, "--help", cwd=user_dir).stdout
    assert all(command in helped for command in ("drain", "dlq", "enqueue", "status"))

    # When events are enqueued and drained to a receiver that refuses one of them
    ids = run(
        spooler, "enqueue", '{"event": "signup"}', '{"event": "oops", "bad": true}', cwd=user_dir
    ).stdout.split()
    assert len(ids) == 2
    run(
        *(spooler, "drain", "--url", f"{receiver.url}/events", "--until-empty"),
        *("--backoff-base", "0.01", "--max-time", "60"),
        cwd=user_dir,
    )

    # Then the good one arrived, and the bad one is in the dead-letter table
    assert [event["event"] for event in receiver.delivered] == ["signup"]
    inspected = run(spooler, "dlq", "inspect", "--json", cwd=user_dir).stdout.splitlines()
    [dead] = [json.loads(line) for line in inspected]
    assert (dead["id"], dead["reason"], dead["status"]) == (ids[1], "rejected", 400)
    status = run(spooler, "status", "--json", cwd=user_dir).stdout
    assert json.loads(status)["destinations"]["default"]["dead"] == 1


def test_the_installed_wheel_runs_the_demo(installed: Path, user_dir: Path) -> None:
    # The demo's receiver lives in spooler.testing: the wheel must carry it.
    demo = run(installed / "spooler", "demo", cwd=user_dir, timeout=120).stdout
    assert "The receiver got" in demo and "nothing was lost" in demo
    # and its staged outage too (three seconds of it: a shorter one can end before the
    # drain's first request), on a spool it keeps for spooler web
    outage = run(
        *(installed / "spooler", "demo", "--outage", "3s", "--before", "0s"),
        cwd=user_dir,
        timeout=120,
    ).stdout
    kept = Path(outage.splitlines()[0].rpartition("spooler web --db ")[2])
    assert kept.parent.name.startswith("spooler-demo-"), outage  # a folder of its own
    try:
        assert "x 503" in outage and "Nothing was lost" in outage
        assert rows(kept, "SELECT count(*) FROM history")[0][0] > 0
    finally:
        shutil.rmtree(kept.parent)


def test_the_installed_datalyr_client_drains_with_flags_only(
    installed: Path, user_dir: Path, receiver: Receiver
) -> None:
    # Given an event queued by the drop-in client, in a program of the user's
    run(
        installed / "python",
        "-c",
        "from spooler import Spool\n"
        "from spooler.clients import Datalyr\n"
        "with Spool('spool.db') as spool:\n"
        "    Datalyr(spool).track('user_123', 'signup_completed', {'plan': 'pro'})\n",
        cwd=user_dir,
    )
    # When it is drained with the flags alone: no config file
    drained = run(
        *(installed / "spooler", "drain", "--db", "spool.db", "-d", "datalyr"),
        *("--type", "datalyr", "--api-key", "dk_smoke_test", "--url", f"{receiver.url}/track"),
        *("--until-empty", "--max-time", "60"),
        cwd=user_dir,
    )
    # Then the receiver has it, sent with the key, and the key was never printed
    [request] = receiver.requests
    assert (request.path, request.status) == ("/track", 200)
    assert request.events[0]["event"] == "signup_completed"
    assert "dk_smoke_test" in json.dumps(request.headers)
    assert "dk_smoke_test" not in drained.stdout + drained.stderr


def test_pipx_installs_the_checkout_with_the_metrics_extra(built: Built, tmp_path: Path) -> None:
    # pipx comes with the test extra; everything it writes stays under tmp_path.
    pipx_env = clean_env(
        PIPX_HOME=str(tmp_path / "pipx"),
        PIPX_BIN_DIR=str(tmp_path / "bin"),
        PIPX_MAN_DIR=str(tmp_path / "man"),
    )
    run(
        *(sys.executable, "-m", "pipx", "install", f"{built.source}[metrics]"),
        cwd=tmp_path,
        env=pipx_env,
        timeout=INSTALL_TIMEOUT,
    )
    spooler = tmp_path / "bin" / "spooler"
    assert "drain" in run(spooler, "--help", cwd=tmp_path).stdout

    # The metrics extra is there: the drain serves /metrics.
    port = free_port()
    drain = subprocess.Popen(
        [
            spooler,
            "drain",
            "--db",
            tmp_path / "spool.db",
            "--url",
            "-",
            "--metrics-port",
            str(port),
        ],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def metrics_served() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
                    return page.status == 200 and b"spooler_" in page.read()
            except OSError:
                assert drain.poll() is None, drain.communicate()[1]
                return False

        assert wait_until(metrics_served, timeout=60)
    finally:
        drain.terminate()
        _, stderr = drain.communicate(timeout=60)
    assert drain.returncode == 0, stderr


@pytest.mark.parametrize("command", ["serve", "web"])
def test_serve_and_web_without_their_extra_say_what_to_install(
    installed: Path, user_dir: Path, command: str
) -> None:
    # The plain install has no httptools: the command names its extra, in one line
    run(installed / "spooler", "enqueue", "{}", cwd=user_dir)
    done = subprocess.run(
        [installed / "spooler", command, "--port", str(free_port())],
        cwd=user_dir,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"spooler: error: spooler {command} needs httptools: pip install 'spooler[{command}]'"
    )


@pytest.fixture(scope="module")
def with_extras(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed with the serve and web extras, as the README
    says (``pip install 'spooler[serve]'``, ``'spooler[web]'``)."""
    venv = tmp_path_factory.mktemp("extras")
    run(sys.executable, "-m", "venv", venv, cwd=venv)
    wheel = f"{built.wheel}[serve,web]"
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=venv, timeout=600)
    return venv


def test_the_serve_extra_relays_an_sdk_request_into_the_spool(
    with_extras: Path, user_dir: Path
) -> None:
    # Given the wheel installed with the serve extra
    venv = with_extras
    port = free_port()
    relay = subprocess.Popen(
        [venv / "bin" / "spooler", "serve", "--port", str(port)],
        cwd=user_dir,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        # When a Datalyr request reaches it
        url = f"http://127.0.0.1:{port}/track"
        request = urllib.request.Request(
            url,
            data=b'{"event": "signup", "userId": "u_1", "eventId": "e-1"}',
            headers={"Content-Type": "application/json", "X-API-Key": "dk_test"},
        )

        def answered() -> bool:
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    return answer.status == 200
            except OSError:
                return False

        assert wait_until(answered, timeout=30)
    finally:
        relay.terminate()
        assert relay.wait(timeout=30) == 0
        assert relay.stderr is not None
        relay.stderr.close()
    # Then the event waits in the spool for the datalyr destination
    status = json.loads(run(venv / "bin" / "spooler", "status", "--json", cwd=user_dir).stdout)
    assert status["destinations"]["datalyr"]["queued"] == 1
    (report,) = status["services"].values()
    assert report["requests_accepted"] == 1


def test_the_web_extra_serves_the_dashboard(with_extras: Path, user_dir: Path) -> None:
    # Given a spool, and the wheel installed with the web extra
    spooler = with_extras / "bin" / "spooler"
    run(spooler, "enqueue", '{"event": "signup"}', cwd=user_dir)
    port = free_port()
    web = subprocess.Popen(
        [spooler, "web", "--port", str(port)],
        cwd=user_dir,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        # When a browser asks for the overview, its script and its style sheet
        def page(path: str) -> bytes:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                assert answer.status == 200
                return answer.read()

        def served() -> bool:
            try:
                return b'data-destination="default"' in page("/")
            except OSError:
                assert web.poll() is None
                return False

        # Then the page shows the spool, and the files the wheel ships are there
        assert wait_until(served, timeout=30)
        assert b"data-part" in page("/static/dashboard.js")
        assert b"font-family" in page("/static/dashboard.css")
    finally:
        web.terminate()
        _, stderr = web.communicate(timeout=30)
    assert web.returncode == 0, stderr
