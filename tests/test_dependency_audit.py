"""The CI's dependency audit: how a pip-audit report is judged (scripts/audit_deps.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "audit_deps.py"


def _judge(tmp_path: Path, deps: list[dict], *flags: str) -> subprocess.CompletedProcess[str]:
    report = tmp_path / "report.json"
    # the shape pip-audit's "-f json" writes
    report.write_text(json.dumps({"dependencies": deps, "fixes": []}), encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--report", str(report), *flags], capture_output=True, text=True
    )


def test_a_vulnerability_with_a_fix_fails_the_step_naming_it(tmp_path: Path) -> None:
    deps = [
        {"name": "numpy", "version": "2.3.1", "vulns": []},
        {"name": "jinja2", "version": "3.1.2", "vulns": [{"id": "GHSA-h5c8-rqwp-cp95", "fix_versions": ["3.1.3"]}]},
    ]
    r = _judge(tmp_path, deps)
    assert r.returncode == 1, r.stdout
    assert "jinja2 3.1.2: GHSA-h5c8-rqwp-cp95, fixed in 3.1.3" in r.stdout
    assert "2 of 2 packages audited, 1 vulnerabilities with a fix" in r.stdout


def test_a_vulnerability_without_a_fix_warns_and_passes(tmp_path: Path) -> None:
    deps = [{"name": "somepkg", "version": "1.0", "vulns": [{"id": "PYSEC-2099-1", "fix_versions": []}]}]
    r = _judge(tmp_path, deps)
    assert r.returncode == 0
    assert "warning: vulnerable, no fix yet: somepkg 1.0: PYSEC-2099-1" in r.stdout


def test_packages_not_audited_are_counted_and_fail_only_when_strict(tmp_path: Path) -> None:
    deps = [
        {"name": "numpy", "version": "2.3.1", "vulns": []},
        {"name": "aiohttp", "skip_reason": "Dependency not found on PyPI and could not be audited: aiohttp (3.14.5)"},
    ]
    r = _judge(tmp_path, deps)
    assert r.returncode == 0
    assert "warning: 1 of 2 packages could not be audited" in r.stdout and "aiohttp" in r.stdout
    strict = _judge(tmp_path, deps, "--strict")
    assert strict.returncode == 1
    assert "error: 1 of 2 packages could not be audited" in strict.stdout


def test_a_file_that_is_not_a_report_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"oops": 1}', encoding="utf-8")
    r = subprocess.run([sys.executable, str(SCRIPT), "--report", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "not a pip-audit JSON report" in r.stderr
