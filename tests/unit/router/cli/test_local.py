"""``leadrouter dev`` without the ``local`` extra names the extra instead of failing on an import."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from router.cli import local
from router.cli.main import main

REPO = Path(__file__).resolve().parents[4]


@pytest.mark.parametrize("module", sorted(local.MODULES))
def test_dev_without_the_local_extra_says_which_extra_to_install(
        module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails, find_spec answers None
    assert local.missing_local_modules() == [local.MODULES[module]]
    assert main(["dev", "--duration", "0"]) == 2
    err = capsys.readouterr().err
    assert "`local` extra" in err and local.MODULES[module] in err
    assert '".[local]"' in err


def test_the_extra_in_pyproject_lists_what_the_check_looks_for() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extra = project["optional-dependencies"][local.EXTRA]
    names = {spec.split(">")[0].split("=")[0].split("<")[0].strip() for spec in extra}
    assert names == set(local.MODULES.values())
    # The service's own dependencies do not pull them in, and `dev` (what bootstrap installs) does.
    runtime = " ".join(project["dependencies"])
    assert not any(name in runtime for name in names)
    assert f"leadrouter[{local.EXTRA}]" in project["optional-dependencies"]["dev"]
