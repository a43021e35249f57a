"""Known vulnerabilities in the locked dependencies, with pip-audit.

pip-audit runs from its own virtual environment (ops/tool_venvs.py), on every package uv.lock
pins (all extras and groups: what `make run`, `make test` and the Bento install). Advisories
listed in ops/security/pip-audit-ignore.txt (id, then why) are accepted; any other fails the
run. When no vulnerability service answers (no package could be looked up), it says so and does
not pretend the audit passed or failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
from ops.tool_venvs import UV, tool_python  # noqa: E402

IGNORE_FILE = Path(__file__).with_name("pip-audit-ignore.txt")


def main() -> int:
    tool = tool_python("pip-audit", REPO_ROOT / "runs" / "audit-venv").with_name("pip-audit")
    requirements = REPO_ROOT / "runs" / "audit-requirements.txt"
    subprocess.run(
        [str(UV), "export", "--quiet", "--frozen", "--all-extras"]
        + ["--all-groups", "--no-emit-project", "--no-hashes", "-o", str(requirements)],
        cwd=REPO_ROOT,
        check=True,
    )
    ignored = [
        line.split()[0]
        for line in IGNORE_FILE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    command = [str(tool), "-r", str(requirements), "--no-deps", "--disable-pip", "-f", "json"]
    for advisory in ignored:
        command += ["--ignore-vuln", advisory]
    system_cas = Path("/etc/ssl/certs/ca-certificates.crt")  # trusts an intercepting proxy's CA
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(system_cas)} if system_cas.exists() else None
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    report = json.loads(result.stdout or "{}")
    dependencies = report.get("dependencies", [])
    audited = [d for d in dependencies if "skip_reason" not in d]
    found = [(d["name"], d["version"], v["id"]) for d in audited for v in d.get("vulns", [])]
    print(
        f"pip-audit: {len(audited)} of {len(dependencies)} packages audited, "
        f"{len(ignored)} advisories accepted"
    )
    if not audited:
        print(
            "pip-audit: WARNING no vulnerability data reachable from this machine "
            "(the PyPI JSON API did not answer for any package): nothing was audited"
        )
        return 0
    for name, version, advisory in found:
        print(f"pip-audit: {name} {version}: {advisory}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
