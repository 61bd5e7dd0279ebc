"""scripts/bootstrap.sh picks an interpreter without printing anything (pyenv shims are noisy)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BOOTSTRAP = REPO / "scripts" / "bootstrap.sh"
PYENV_SHIM = """#!/bin/sh
echo "pyenv: $(basename "$0"): command not found" >&2
echo "The \\`$(basename "$0")' command exists in these Python versions:" >&2
exit 127
"""


def fake_bin(tmp_path: Path, scripts: dict[str, str]) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    return bin_dir


def probe(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env["PATH"] = f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"
    return subprocess.run(["bash", str(BOOTSTRAP), "--print-python"], env=env, capture_output=True, text=True,
                          timeout=60)


def test_unselected_pyenv_versions_are_skipped_quietly(tmp_path: Path) -> None:
    bin_dir = fake_bin(tmp_path, {
        "python3.13": PYENV_SHIM,
        "python3.12": PYENV_SHIM,
        "python3.11": f'#!/bin/sh\nexec "{sys.executable}" "$@"\n',
    })
    out = probe(bin_dir)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "python3.11"
    assert out.stderr == ""


def test_too_old_pythons_are_skipped_quietly(tmp_path: Path) -> None:
    too_old = '#!/bin/sh\necho "Python 3.9 noise" >&2\nexit 1\n'
    bin_dir = fake_bin(tmp_path, {
        "python3.13": PYENV_SHIM,
        "python3.12": too_old,
        "python3.11": too_old,
        "python3": f'#!/bin/sh\nexec "{sys.executable}" "$@"\n',
    })
    out = probe(bin_dir)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "python3"
    assert out.stderr == ""
