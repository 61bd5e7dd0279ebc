"""Benchmark: one exact explanation (path-dependent TreeSHAP through the sigmoid calibration) per lead.

The worker explains a lead when it crosses, an SLA step hands it to a rep, or someone asks
(``lead explain``, the admin API), never per event.  This measures that cost on a model of the
size ``leadrouter model train`` fits (150 trees of up to 15 leaves) over 8 catalogue-style
features, and checks that every explanation adds up to the model's log-odds.

    python -m bench.explain [--rows 200] [--train 6000]
"""

from __future__ import annotations

import argparse
import math
import random
import time

import numpy as np

from scoring.model import (
    Feature,
    ModelParams,
    Schema,
    build_calibrated,
    explain,
    feature_matrix,
    positive_proba,
)

SCHEMA = Schema("won", (
    Feature("lead_origin", "categorical"), Feature("page_views", "numeric"), Feature("last_activity", "categorical"),
    Feature("country", "categorical"), Feature("occupation", "categorical"), Feature("email_opt_out", "boolean"),
    Feature("form:city", "categorical"), Feature("form:specialization", "categorical")), ())


def rows(n: int, rng: random.Random) -> tuple[list[dict[str, object]], list[int]]:
    out: list[dict[str, object]] = []
    y: list[int] = []
    for _ in range(n):
        r: dict[str, object] = {
            "lead_origin": rng.choice(["form", "tracking", None]),
            "page_views": float(rng.randint(0, 40)) if rng.random() > 0.2 else None,
            "last_activity": rng.choice(["email opened", "page visited on website", "form submitted", None]),
            "country": rng.choice(["india", "united states", "germany", "united kingdom", None]),
            "occupation": rng.choice(["student", "working professional", None]),
            "email_opt_out": rng.choice([0.0, 1.0, None]),
            "form:city": rng.choice(["mumbai", "pune", "delhi", "other", None]),
            "form:specialization": rng.choice([*"abcdefghij", None])}
        z = (1.0 if r["lead_origin"] == "form" else -1.0) + 0.05 * float(r["page_views"] or 0.0)  # type: ignore[arg-type]
        z += 0.5 if r["country"] == "united states" else 0.0
        out.append(r)
        y.append(int(rng.random() < 1 / (1 + math.exp(-z))))
    return out, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=200, help="leads explained")
    ap.add_argument("--train", type=int, default=6000, help="training rows")
    args = ap.parse_args()
    rng = random.Random(0)
    train, y = rows(args.train, rng)
    model = build_calibrated(SCHEMA, ModelParams(calibration="sigmoid")).fit(feature_matrix(train, SCHEMA.names),
                                                                           np.asarray(y))
    leads, _ = rows(args.rows, rng)
    p = positive_proba(model, feature_matrix(leads, SCHEMA.names))
    explain(model, SCHEMA, leads[0])  # the trees are converted once per model, then cached
    worst = 0.0
    t0 = time.perf_counter()
    for lead, prob in zip(leads, p, strict=True):
        ex = explain(model, SCHEMA, lead)
        worst = max(worst, abs(ex.base_log_odds + sum(c.log_odds for c in ex.contributions)
                               - math.log(prob / (1 - prob))))
    per = (time.perf_counter() - t0) / len(leads)
    print(f"explain: {per * 1000:.1f} ms per lead over {len(leads)} leads "
          f"(150 trees, <=15 leaves, {len(SCHEMA.features)} features); max |base + sum - logit| = {worst:.1e}")


if __name__ == "__main__":
    main()
