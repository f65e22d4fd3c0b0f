"""Run the test suite and report pytest's verdict, whatever happens at interpreter exit.

The Temporal SDK's native threads can crash the interpreter during shutdown, after all
tests have run ("Fatal Python error: PyGILState_Release", exit 134 or 139). conftest.py
leaves with os._exit before that point; this runner is the second line: on such a crash
it reads the JUnit report pytest wrote before exiting, and passes only if that report
exists, counts at least one test, and has no failure and no error. A crash before the
report is written, or any failure in it, stays red.

With CLARION_TEST_POSTGRES_URL set and no arguments, the suite runs as two processes in
parallel: everything on SQLite (its output streams here), and the PostgreSQL variants of
the store tests (its output is printed when it ends). Both must pass.
CLARION_TEST_PARALLEL=0 runs one process with both backends instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

CRASH_CODES = {134, 139, -6, -11}


def verdict(report: Path) -> tuple[bool, str]:
    if not report.exists():
        return False, "no JUnit report was written"
    suites = ET.parse(report).getroot()
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    if suite is None:
        return False, "the JUnit report has no testsuite"
    tests, failures, errors = (int(suite.get(k, "0")) for k in ("tests", "failures", "errors"))
    ok = tests > 0 and failures == 0 and errors == 0
    return ok, f"{tests} tests, {failures} failures, {errors} errors"


def settle(name: str, code: int, report: Path) -> int:
    """The exit status of one pytest run, forgiving a crash after a clean report."""
    if code in CRASH_CODES:
        ok, summary = verdict(report)
        print(f"tests/run.py: {name}: the interpreter crashed at exit ({code}); report: {summary}")
        return 0 if ok else 1
    return code


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONFAULTHANDLER": "0"}
    parallel = (
        not argv
        and bool(os.environ.get("CLARION_TEST_POSTGRES_URL"))
        and os.environ.get("CLARION_TEST_PARALLEL", "1") != "0"
    )
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", f"--junitxml={report}", *argv]
        if not parallel:
            return settle("pytest", subprocess.call(cmd, cwd=root, env=env), report)
        pg_report = Path(tmp) / "junit-postgres.xml"
        pg_log = Path(tmp) / "postgres.log"
        with pg_log.open("w") as log:
            pg = subprocess.Popen(
                [sys.executable, "-m", "pytest", f"--junitxml={pg_report}", "tests/integration"],
                cwd=root,
                env={**env, "CLARION_TEST_BACKEND": "postgres"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                sqlite_code = subprocess.call(
                    cmd, cwd=root, env={**env, "CLARION_TEST_BACKEND": "sqlite"}
                )
            finally:
                pg_code = pg.wait()
        print("\n---------------- the PostgreSQL run ----------------", flush=True)
        sys.stdout.write(pg_log.read_text(errors="replace"))
        sys.stdout.flush()
        results = [
            settle("SQLite run", sqlite_code, report),
            settle("PostgreSQL run", pg_code, pg_report),
        ]
        print(f"tests/run.py: SQLite run exit {results[0]}, PostgreSQL run exit {results[1]}")
        return 0 if results == [0, 0] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
