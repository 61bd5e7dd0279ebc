"""Lead scoring: pure logic over ``models``.

Load the ops-edited points table with :func:`load_scoring_config`, turn events
into reasons with :func:`score_event`, and keep scores with the exact decay
math in :mod:`scoring.decay` (mirrored by the Redis Lua script).
"""

from scoring.config import (
    DEFAULT_HALF_LIFE_DAYS,
    RULE_KEYS,
    TOP_KEYS,
    ScoringConfig,
    ScoringRule,
    load_scoring_config,
)
from scoring.decay import NO_SCORE, add_points, decay_factor, score_at
from scoring.errors import DecayError, ScoringConfigError, ScoringError
from scoring.points import describe_event, is_hand_raiser, rule_matches, score_event, total_points, url_target

__all__ = [
    "DEFAULT_HALF_LIFE_DAYS",
    "NO_SCORE",
    "RULE_KEYS",
    "TOP_KEYS",
    "DecayError",
    "ScoringConfig",
    "ScoringConfigError",
    "ScoringError",
    "ScoringRule",
    "add_points",
    "decay_factor",
    "describe_event",
    "is_hand_raiser",
    "load_scoring_config",
    "rule_matches",
    "score_at",
    "score_event",
    "total_points",
    "url_target",
]
