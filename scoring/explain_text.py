"""Human wording for model explanations: feature labels and ``+0.21 page views: 12`` lines.

Labels live here, beside (not inside) the feature catalogue: a feature without a
label here is shown by its name with underscores as spaces, and ``form:<field>``
as ``form answer <field>``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from scoring.model import Contribution, Explanation

LABELS: Final[Mapping[str, str]] = {
    "lead_origin": "lead origin",
    "page_views": "page views",
    "last_activity": "last activity",
    "lead_source": "first-touch source",
    "last_touch": "last-touch source",
    "sessions": "sessions",
    "time_on_site": "time on site (s)",
    "pages_per_session": "pages per session",
    "engagement": "engagement score",
    "engagement_change": "engagement change on the last active day",
    "recency_days": "days since last activity",
    "fit_grade": "fit grade",
    "fit_points": "fit points",
    "country": "country",
    "occupation": "occupation",
    "email_opt_out": "opted out of email",
}

MINUS: Final = "\N{MINUS SIGN}"


def feature_label(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    if name.startswith("form:"):
        return f"form answer {name.removeprefix('form:').replace('_', ' ')}"
    return name.replace("_", " ")


def value_text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing"
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return f"{value:.3g}"
    return str(value)[:60]


def signed(log_odds: float) -> str:
    """``+0.21``, or a real minus sign (U+2212) and ``0.08`` for a negative share."""
    text = f"{abs(log_odds):.2f}"
    return f"+{text}" if log_odds >= 0 else f"{MINUS}{text}"


def contribution_text(c: Contribution) -> str:
    """``+0.21 page views: 12``."""
    return f"{signed(c.log_odds)} {feature_label(c.feature)}: {value_text(c.value)}"


def explanation_dict(ex: Explanation, version: str, top: int = 5) -> dict[str, Any]:
    """What an alert, ``lead explain`` and the admin API carry: JSON-safe, the top ``top`` contributions."""
    return {
        "version": version,
        "probability": ex.probability,
        "base_log_odds": ex.base_log_odds,
        "log_odds": ex.base_log_odds + sum(c.log_odds for c in ex.contributions),
        "contributions": [
            {"feature": c.feature, "label": feature_label(c.feature), "value": value_text(c.value),
             "log_odds": c.log_odds, "text": contribution_text(c)}
            for c in ex.contributions[:top]],
        "more": max(0, len(ex.contributions) - top),
    }


def summary_line(model: Mapping[str, Any], top: int = 3) -> str:
    """``probability 0.63 (model v…): +0.21 page views: 12, +0.12 occupation: ...`` from :func:`explanation_dict`."""
    parts = [str(c.get("text", "")) for c in list(model.get("contributions") or [])[:top]]
    head = f"probability {float(model.get('probability', 0.0)):.2f}"
    return head + (": " + ", ".join(parts) if parts else "")
