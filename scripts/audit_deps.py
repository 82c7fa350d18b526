"""Audit the installed dependency set for known vulnerabilities (the CI step "dependency audit").

    python3 scripts/audit_deps.py                 run pip-audit on what is installed, then judge
    python3 scripts/audit_deps.py --report F      judge a pip-audit JSON report already written
    python3 scripts/audit_deps.py --strict        also fail when packages could not be audited

The verdict:
- a vulnerability with a fixed version available fails the step (exit 1), naming the package,
  the advisory and the versions that fix it;
- a vulnerability with no fix yet is printed as a warning (nothing to upgrade to);
- packages the vulnerability service could not audit (no network, a mirror without the
  per-version API) are counted and named in one line; they fail the step only with --strict.

The set audited is ``pip freeze --exclude-editable`` of the running interpreter: the exact versions
``scripts/setup.sh --dev`` installed, offramp itself left out (it is not on the index).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Verdict:
    fixable: list[str] = field(default_factory=list)
    unfixed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    audited: int = 0

    def exit_code(self, strict: bool) -> int:
        if self.fixable:
            return 1
        if strict and self.skipped:
            return 1
        return 0


def judge(report: dict[str, Any]) -> Verdict:
    """Sort a pip-audit JSON report into what must be fixed, what cannot be yet, and what was not audited."""
    deps = report.get("dependencies")
    if not isinstance(deps, list):
        raise ValueError("not a pip-audit JSON report: no 'dependencies' list")
    v = Verdict()
    for dep in deps:
        if dep.get("skip_reason"):
            v.skipped.append(str(dep.get("name")))
            continue
        name = f"{dep.get('name')} {dep.get('version')}"
        v.audited += 1
        for vuln in dep.get("vulns") or []:
            ident = vuln.get("id", "?")
            fixes = [str(x) for x in vuln.get("fix_versions") or []]
            if fixes:
                v.fixable.append(f"{name}: {ident}, fixed in {', '.join(fixes)}")
            else:
                v.unfixed.append(f"{name}: {ident}, no fixed version yet")
    return v


def run_pip_audit(out: Path) -> None:
    """Write pip-audit's JSON report on the installed set to ``out``."""
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    pins = [line for line in freeze.splitlines() if "==" in line and not line.startswith("offramp==")]
    req = out.with_suffix(".txt")
    req.write_text("\n".join(pins) + "\n", encoding="utf-8")
    # --no-deps: the list is complete already; --disable-pip: audit these pins, do not resolve them again
    cmd = [sys.executable, "-m", "pip_audit", "--no-deps", "--disable-pip", "--progress-spinner", "off"]
    cmd += ["-r", str(req), "-f", "json", "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if not out.exists():
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"dependency audit: pip-audit wrote no report ({tail})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", type=Path, help="a pip-audit JSON report to judge instead of running pip-audit")
    ap.add_argument("--strict", action="store_true", help="fail when packages could not be audited")
    args = ap.parse_args(argv)
    if args.report:
        path = args.report
    else:
        path = Path(tempfile.mkdtemp(prefix="offramp-audit-")) / "report.json"
        run_pip_audit(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        v = judge(report)
    except (OSError, ValueError) as e:
        print(f"dependency audit: cannot read {path}: {e}", file=sys.stderr)
        return 2
    total = v.audited + len(v.skipped)
    for line in v.fixable:
        print(f"VULNERABLE (fix available) {line}")
    for line in v.unfixed:
        print(f"warning: vulnerable, no fix yet: {line}")
    if v.skipped:
        first = ", ".join(v.skipped[:3]) + (", ..." if len(v.skipped) > 3 else "")
        print(
            f"{'error' if args.strict else 'warning'}: {len(v.skipped)} of {total} packages could not be "
            f"audited (the vulnerability service did not know them or could not be reached): {first}"
        )
    print(
        f"dependency audit: {v.audited} of {total} packages audited, {len(v.fixable)} vulnerabilities with a fix, "
        f"{len(v.unfixed)} without"
    )
    return v.exit_code(args.strict)


if __name__ == "__main__":
    sys.exit(main())
