"""The model registry: versioned predictive-score artifacts on disk, and hot reload.

Layout (``DIR`` defaults to ``./var/models``)::

    DIR/<version>/model.joblib     the fitted, calibrated scikit-learn classifier
    DIR/<version>/metadata.json    features, exclusions, data hash, CV metrics, library versions
    DIR/<version>/train_rows.npy   8-byte fingerprints of the training rows (spots in-sample evaluation)
    DIR/ACTIVE                     the version the worker serves (one line)

``<version>`` is the UTC training time plus the first 8 hex digits of the data
file's sha256, e.g. ``20261122T101530Z-781ead10``.  A version folder is
written under a temporary name and renamed into place, and ``ACTIVE`` is
replaced atomically, so a reader never sees half an artifact.

``model.joblib`` is a pickle: only load registries you wrote yourself.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import joblib
import numpy as np
import numpy.typing as npt

from router.errors import RouterError
from scoring.features import catalogue_feature, features_from_lead
from scoring.model import (
    Explanation,
    LeadModel,
    LeadModelError,
    ModelParams,
    PipelineLeadModel,
    Schema,
    explain,
    schema_from_json,
)

log = logging.getLogger(__name__)

DEFAULT_REGISTRY: Final = Path("var") / "models"
ACTIVE_FILE: Final = "ACTIVE"
MODEL_FILE: Final = "model.joblib"
METADATA_FILE: Final = "metadata.json"
FINGERPRINTS_FILE: Final = "train_rows.npy"
METADATA_FORMAT: Final = 1
_VERSION_RE: Final = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")


class ModelRegistryError(RouterError):
    """The model registry folder or one of its files is missing or unusable."""


class ModelNotFoundError(ModelRegistryError):
    """The requested model version is not in the registry."""


class ModelLoadError(ModelRegistryError):
    """A model artifact exists but could not be loaded or failed its smoke test."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model read back from the registry."""

    version: str
    path: Path
    model: PipelineLeadModel
    schema: Schema
    params: ModelParams
    metadata: Mapping[str, Any]

    @property
    def estimator(self) -> Any:
        return self.model.estimator


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: str
    path: Path
    active: bool
    metadata: Mapping[str, Any] | None  # None when metadata.json is unreadable
    problem: str = ""

    @property
    def cv_auc(self) -> float | None:
        cv = (self.metadata or {}).get("cv") or {}
        value = cv.get("auc_mean")
        return float(value) if isinstance(value, (int, float)) else None


def new_version(data_sha256: str, now: datetime | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ-<first 8 hex of the data hash>``."""
    at = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{at:%Y%m%dT%H%M%SZ}-{data_sha256[:8]}"


def check_version(version: str) -> str:
    if not _VERSION_RE.fullmatch(version):
        msg = (f"model version {version!r} is not a valid name (letters, digits, '.', '_', '-'); "
               "run 'leadrouter model list' to see the versions")
        raise ModelNotFoundError(msg)
    return version


def version_dir(registry: Path, version: str) -> Path:
    return registry / check_version(version)


def save_model(
    registry: Path,
    version: str,
    estimator: Any,
    metadata: Mapping[str, Any],
    fingerprints: npt.NDArray[np.uint64] | None = None,
) -> tuple[str, Path]:
    """Write a new version folder atomically; returns the version (suffixed if taken) and its path."""
    check_version(version)
    try:
        registry.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=registry))
    except OSError as exc:
        raise ModelRegistryError(f"cannot create the model registry folder {registry}: {exc}; "
                                 "pass a writable --registry DIR") from exc
    try:
        final_version = version
        n = 1
        while (registry / final_version).exists():
            n += 1
            final_version = f"{version}-{n}"
        meta = {**metadata, "version": final_version, "format": METADATA_FORMAT}
        joblib.dump(estimator, tmp / MODEL_FILE, compress=3)
        if fingerprints is not None:
            np.save(tmp / FINGERPRINTS_FILE, np.asarray(fingerprints, dtype=np.uint64), allow_pickle=False)
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
        os.rename(tmp, registry / final_version)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelRegistryError(f"cannot write model {version} into {registry}: {exc}; "
                                 "check free space and permissions") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final_version, registry / final_version


def read_metadata(registry: Path, version: str) -> dict[str, Any]:
    path = version_dir(registry, version) / METADATA_FILE
    if not path.parent.is_dir():
        known = ", ".join(v.version for v in list_versions(registry)) or "none"
        raise ModelNotFoundError(f"model version {version!r} is not in {registry} (versions: {known}); "
                                 "run 'leadrouter model list'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}; retrain the model or restore the file") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object; retrain the model")
    return data


def read_fingerprints(registry: Path, version: str) -> npt.NDArray[np.uint64] | None:
    """Training-row fingerprints, or ``None`` when the version has none."""
    path = version_dir(registry, version) / FINGERPRINTS_FILE
    try:
        return np.asarray(np.load(path, allow_pickle=False), dtype=np.uint64)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None


def load_model(registry: Path, version: str) -> LoadedModel:
    """Load one version and check that it predicts; raises :class:`ModelRegistryError` subclasses."""
    meta = read_metadata(registry, version)
    path = version_dir(registry, version)
    try:
        schema = schema_from_json(meta)
        params = ModelParams.from_dict(meta.get("model", {}).get("params", {}))
    except (LeadModelError, TypeError, AttributeError) as exc:
        raise ModelLoadError(f"{path / METADATA_FILE}: {exc}") from exc
    trained_with = (meta.get("libraries") or {}).get("scikit-learn")
    running = _library_version("scikit-learn")
    if trained_with and trained_with != running:
        log.warning("model %s was trained with scikit-learn %s but %s is installed; retrain it if it misbehaves",
                    version, trained_with, running)
    try:
        # Unpickling can raise nearly anything (missing module, truncated file, ...).
        estimator = joblib.load(path / MODEL_FILE)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{path / MODEL_FILE} is missing; retrain the model") from exc
    except Exception as exc:
        raise ModelLoadError(f"cannot load {path / MODEL_FILE}: {type(exc).__name__}: {exc}; "
                             "retrain the model with the installed scikit-learn") from exc
    model = PipelineLeadModel(version, schema.names, estimator, schema)
    try:
        (p,) = model.predict_proba([{}])
    except Exception as exc:
        raise ModelLoadError(f"model {version} loaded but cannot predict ({type(exc).__name__}: {exc}); "
                             "retrain it") from exc
    if not 0.0 <= p <= 1.0:
        raise ModelLoadError(f"model {version} predicted {p!r} for an empty lead, not a probability; retrain it")
    return LoadedModel(version, path, model, schema, params, meta)


def active_version(registry: Path) -> str | None:
    """The version in ``DIR/ACTIVE``, or ``None`` when nothing is active."""
    try:
        text = (registry / ACTIVE_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelRegistryError(f"cannot read {registry / ACTIVE_FILE}: {exc}; "
                                 "run 'leadrouter model activate VERSION'") from exc
    return text or None


def explain_lead(loaded: LoadedModel, lead: Mapping[str, str], *, now: float | None = None) -> Explanation:
    """The model's probability for a live lead hash (as of ``now``), with each feature's exact log-odds share."""
    return explain(loaded.estimator, loaded.schema, features_from_lead(lead, loaded.schema.names, now=now))


def load_active(registry: Path) -> LoadedModel | None:
    """The active model, or ``None`` when none is active."""
    version = active_version(registry)
    return None if version is None else load_model(registry, version)


def unservable_features(loaded: LoadedModel) -> list[str]:
    """The model's features the worker cannot compute from a live lead (not in :mod:`scoring.features`)."""
    return [name for name in loaded.schema.names if catalogue_feature(name) is None]


def check_servable(loaded: LoadedModel) -> None:
    """Raise unless every feature of the model is a live catalogue feature (trained with ``--map``)."""
    missing = unservable_features(loaded)
    if missing:
        shown = ", ".join(repr(n) for n in missing[:6]) + (" ..." if len(missing) > 6 else "")
        msg = (f"model {loaded.version} was trained on {len(missing)} column(s) the worker cannot compute from a "
               f"live lead ({shown}); retrain it with 'leadrouter model train --data CSV --map MAPPING.yaml "
               "--target COLUMN' (e.g. scoring/x_education_mapping.yaml) and activate that version")
        raise ModelRegistryError(msg)


def activate(registry: Path, version: str) -> None:
    """Make ``version`` the served one (after checking it loads and is servable): ``ACTIVE`` is replaced atomically.

    A model trained on logged outcomes below the activation minimum (``metadata.activation.allowed`` false,
    router/cli/model_outcomes.py) is refused, with the counts.
    """
    loaded = load_model(registry, version)
    gate = loaded.metadata.get("activation") or {}
    if isinstance(gate, dict) and gate.get("allowed") is False:
        msg = (f"model {version} is not activated: {str(gate.get('detail', '')).removeprefix('not activated: ')}")
        raise ModelRegistryError(msg)
    check_servable(loaded)
    target = registry / ACTIVE_FILE
    fd, tmp = tempfile.mkstemp(prefix=".ACTIVE-", dir=registry)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(version + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ModelRegistryError(f"cannot write {target}: {exc}; check permissions on {registry}") from exc


def list_versions(registry: Path) -> list[VersionInfo]:
    """Every version folder, oldest first (versions sort by time)."""
    if not registry.is_dir():
        return []
    try:
        active = active_version(registry)
    except ModelRegistryError:
        active = None
    out: list[VersionInfo] = []
    for child in sorted(registry.iterdir()):
        if not child.is_dir() or child.name.startswith(".") or not _VERSION_RE.fullmatch(child.name):
            continue
        try:
            meta: dict[str, Any] | None = read_metadata(registry, child.name)
            problem = "" if (child / MODEL_FILE).is_file() else f"{MODEL_FILE} missing"
        except ModelRegistryError as exc:
            meta, problem = None, str(exc)
        out.append(VersionInfo(child.name, child, child.name == active, meta, problem))
    return out


def latest_version(registry: Path) -> str | None:
    versions = [v for v in list_versions(registry) if not v.problem]
    return versions[-1].version if versions else None


def _library_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ActiveModelWatcher:
    """Serve the active model and swap to a newly activated one without a restart.

    Call :meth:`maybe_reload` now and then (it only stats ``ACTIVE`` unless it
    changed).  Loading unpickles a file: from async code run it in a thread
    (``await asyncio.to_thread(watcher.maybe_reload)``); the swap of
    :attr:`current` is a single assignment, so readers see the old or the new
    model, never a mix.  When the newly activated version fails to load the old
    one keeps serving and the error is logged; an ``ACTIVE`` that disappears
    also leaves the current model in place.
    """

    def __init__(self, registry_dir: Path,
                 loader: Callable[[Path, str], LoadedModel] = load_model) -> None:
        self.registry_dir = Path(registry_dir)
        self.current: LeadModel | None = None
        self.loaded: LoadedModel | None = None
        self.last_error: str | None = None
        self._loader = loader
        self._stamp: tuple[int, int, int] | None = None

    def maybe_reload(self) -> bool:
        """Returns True when a different version took over."""
        stamp = _stamp(self.registry_dir / ACTIVE_FILE)
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            version = active_version(self.registry_dir)
        except ModelRegistryError as exc:
            self.last_error = str(exc)
            log.error("kept model %s: %s", self._name(), exc)
            return False
        if version is None or (self.current is not None and self.current.version == version):
            return False
        try:
            loaded = self._loader(self.registry_dir, version)
            check_servable(loaded)
        except ModelRegistryError as exc:
            self.last_error = str(exc)
            log.error("kept model %s; the newly activated %s did not load: %s", self._name(), version, exc)
            return False
        self.loaded = loaded
        self.current = loaded.model
        self.last_error = None
        log.info("predictive model %s is now active (from %s)", version, loaded.path)
        return True

    def _name(self) -> str:
        return self.current.version if self.current is not None else "(none)"
