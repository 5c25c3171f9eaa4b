"""Target 7: ``import spooler`` within 3x of ``import sqlite3, json``, and never
importing httpx or click (the enqueue path of a web handler or cron job). For context:
the import time of persist-queue and of analytics-python.

    python benchmarks/import_time.py
"""

from __future__ import annotations

import compileall
import subprocess
import sys
from pathlib import Path

from common import Row, at_most, context, interleaved, report, sized

import spooler

ROUNDS = sized(15, smoke=1)
# Each child times only its import (not interpreter start-up) and lists what it loaded.
CHILD = """
import sys, time
began = time.perf_counter()
import {modules}
elapsed = time.perf_counter() - began
print(elapsed, *(m for m in ("httpx", "click") if m in sys.modules))
"""


def import_ms(modules: str, loaded: set[str]) -> float:
    code = CHILD.format(modules=modules)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    elapsed, *heavy = out.stdout.split()
    loaded.update(heavy)
    return float(elapsed) * 1000


def measure() -> list[Row]:
    # Compare like with like: the standard library loads from bytecode, so spooler must
    # too (an installed wheel has it; an editable install under PYTHONDONTWRITEBYTECODE
    # would compile spooler's source at every start instead, ~2x the import time).
    compileall.compile_dir(Path(spooler.__file__).parent, quiet=1)
    heavy: set[str] = set()
    times = interleaved(
        {
            "spooler": lambda: import_ms("spooler", heavy),
            "stdlib": lambda: import_ms("sqlite3, json", set()),
            "persist-queue": lambda: import_ms("persistqueue", set()),
            "analytics-python": lambda: import_ms("segment.analytics", set()),
        },
        ROUNDS,
    )
    return [
        at_most(
            "7. `import spooler`",
            times["spooler"],
            times["stdlib"],
            "import sqlite3, json",
            3.0,
            "ms",
        ),
        context(
            "7. `import spooler`",
            times["spooler"],
            times["persist-queue"],
            "import persistqueue",
            "ms",
            form=",.1f",
        ),
        context(
            "7. `import spooler`",
            times["spooler"],
            times["analytics-python"],
            "import segment.analytics",
            "ms",
            form=",.1f",
        ),
        Row(
            "7. modules `import spooler` loads",
            ", ".join(sorted(heavy)) or "neither httpx nor click",
            "-",
            0.0,
            "no httpx, no click",
            not heavy,
        ),
    ]


if __name__ == "__main__":
    report(measure())
