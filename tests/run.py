"""Run the test suite and report pytest's verdict, whatever happens at interpreter exit.

The Temporal SDK's native threads can crash the interpreter during shutdown, after all
tests have run ("Fatal Python error: PyGILState_Release", exit 134 or 139). conftest.py
leaves with os._exit before that point; this runner is the second line: on such a crash
it reads the JUnit report pytest wrote before exiting, and passes only if that report
exists, counts at least one test, and has no failure and no error. A crash before the
report is written, or any failure in it, stays red.
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


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", f"--junitxml={report}", *argv]
        code = subprocess.call(cmd, cwd=root, env={**os.environ, "PYTHONFAULTHANDLER": "0"})
        if code in CRASH_CODES:
            ok, summary = verdict(report)
            print(f"tests/run.py: the interpreter crashed at exit ({code}); report: {summary}")
            return 0 if ok else 1
        return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
