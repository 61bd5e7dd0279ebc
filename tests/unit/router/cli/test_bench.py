"""``leadrouter bench`` finds the installed ``bench`` package from any directory, without touching sys.path."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from router.cli import bench as bench_cli

REPO = Path(__file__).resolve().parents[4]
LEADROUTER = Path(sys.executable).with_name("leadrouter")


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_bench_help_works_outside_the_repository(tmp_path: Path) -> None:
    assert LEADROUTER.is_file(), f"no leadrouter script next to {sys.executable}"
    out = run([str(LEADROUTER), "bench", "--help"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "--phases" in out.stdout and "--markdown" in out.stdout


def test_the_bench_package_is_importable_outside_the_repository(tmp_path: Path) -> None:
    probe = ("import bench.full_path, router.cli.bench as b; "
             "print(bench.full_path.__file__); print(b.checkout_root()); print(b.output_root())")
    out = run([sys.executable, "-c", probe], tmp_path)
    assert out.returncode == 0, out.stderr
    module, root, output = out.stdout.split("\n")[:3]
    assert Path(module) == REPO / "bench" / "full_path.py"
    assert Path(root) == REPO and Path(output) == REPO  # results land in the checkout, not the cwd


def test_python_m_bench_full_path_still_works_from_the_root() -> None:
    out = run([sys.executable, "-m", "bench.full_path", "--help"], REPO)
    assert out.returncode == 0, out.stderr
    assert "--phases" in out.stdout


def test_defaults_point_into_the_checkout_and_nothing_edits_sys_path() -> None:
    assert bench_cli.checkout_root() == REPO
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    args = parser.parse_args([])
    assert args.markdown == REPO / "BENCHMARKS.md"
    assert args.plot == REPO / "bench" / "results" / "full_path.png"
    assert "sys.path" not in Path(bench_cli.__file__).read_text(encoding="utf-8")


def test_outside_a_checkout_the_results_go_to_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_cli, "checkout_root", lambda: None)
    monkeypatch.chdir(tmp_path)
    assert bench_cli.output_root() == tmp_path


def test_the_worker_split_run_is_off_by_default() -> None:
    import argparse

    from bench.full_path import Options
    from router.cli.bench import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert Options.from_args(p.parse_args([])).worker_split is False
    assert Options.from_args(p.parse_args(["--worker-split"])).worker_split is True
