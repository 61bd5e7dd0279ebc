"""What ``leadrouter model`` commands print and draw: stage lines, evaluation tables, plots, library versions.

Shared by router/cli/model.py (CSV training) and router/cli/model_outcomes.py (training on logged outcomes).
"""

from __future__ import annotations

import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from router.errors import RouterError
from scoring.model import Evaluation


class ModelCommandError(RouterError):
    """A ``leadrouter model`` command was asked for something impossible (bad option value, no model)."""


class Clock:
    """Prints ``[ 3.2s] message`` stage lines."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.t0 = time.perf_counter()
        self.out = out

    def __call__(self, message: str) -> None:
        out = self.out or sys.stderr
        print(f"[{time.perf_counter() - self.t0:5.1f}s] {message}", file=out, flush=True)


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("scikit-learn", "numpy", "scipy", "joblib", "threadpoolctl"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def print_evaluation(ev: Evaluation, *, version: str, data: Path, notes: Sequence[str],
                     cv_auc: float | None, out: TextIO | None = None) -> None:
    o = out or sys.stdout
    print(f"model     {version}", file=o)
    print(f"data      {data} ({ev.rows} rows, {ev.positives} conversions, {ev.positives / ev.rows:.1%})", file=o)
    for note in notes:
        print(note, file=o)
    print(f"AUC       {ev.auc:.4f}", file=o)
    print(f"log loss  {ev.log_loss:.4f}", file=o)
    print(f"ECE       {ev.ece:.4f} (10 equal-width bins)", file=o)
    print("", file=o)
    print(f"{'decile':>6} {'leads':>7} {'conversions':>11} {'rate':>7} {'lift':>6} {'captured':>9} {'scores':>13}",
          file=o)
    for r in ev.lift:
        lift = f"{r.lift:6.2f}" if not math.isnan(r.lift) else "     -"
        print(f"{r.decile:>6} {r.leads:>7} {r.conversions:>11} {r.rate:>7.1%} {lift} {r.cumulative_capture:>9.1%} "
              f"{r.min_score:>6.3f}-{r.max_score:.3f}", file=o)
    print("", file=o)


def write_plots(ev: Evaluation, out_dir: Path, *, title: str) -> tuple[Path, Path]:
    """``calibration.png`` and ``lift.png`` in ``out_dir`` (matplotlib, Agg; written atomically)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ModelCommandError("the plots need matplotlib: pip install matplotlib") from exc
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelCommandError(f"cannot create {out_dir}: {exc}; pass a writable --out DIR") from exc

    cal = Figure(figsize=(6.4, 6.4))
    FigureCanvasAgg(cal)
    ax, hist = cal.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    full = [b for b in ev.bins if b.count]
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot([b.mean_predicted for b in full], [b.observed_rate for b in full], marker="o", label="model")
    ax.set_ylabel("observed conversion rate")
    ax.set_ylim(0, 1)
    ax.set_title(f"Calibration: {title}\nECE {ev.ece:.3f}, AUC {ev.auc:.3f}", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    hist.bar([(b.lower + b.upper) / 2 for b in ev.bins], [b.count for b in ev.bins], width=0.09, color="tab:blue")
    hist.set_xlabel("predicted probability")
    hist.set_ylabel("leads")
    hist.set_xlim(0, 1)
    cal.tight_layout()

    lift = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(lift)
    lx = lift.subplots()
    deciles = [r.decile for r in ev.lift]
    lx.bar(deciles, [0.0 if math.isnan(r.lift) else r.lift for r in ev.lift], color="tab:green")
    lx.axhline(1.0, linestyle="--", color="grey")
    for r in ev.lift:
        lx.annotate(f"{r.rate:.0%}", (r.decile, 0.0 if math.isnan(r.lift) else r.lift), ha="center",
                    va="bottom", fontsize=8)
    lx.set_xticks(deciles)
    lx.set_xlabel("decile (1 = highest scores)")
    lx.set_ylabel("lift (conversion rate / overall rate)")
    lx.set_title(f"Lift by decile: {title}\n(bar labels: conversion rate)", fontsize=9)
    lift.tight_layout()

    paths = (out_dir / "calibration.png", out_dir / "lift.png")
    for fig, path in ((cal, paths[0]), (lift, paths[1])):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".png", dir=out_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                fig.savefig(fh, format="png", dpi=100)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise ModelCommandError(f"cannot write {path}: {exc}; pass a writable --out DIR") from exc
    return paths
