"""Data shapes shared by every layer.  Imports nothing of ours."""

from models.errors import InvalidEventError, ModelError
from models.events import FORM_FIELDS, Event, EventType
from models.identity import Conflict, Kind, Link, Merge, MergeStatus, Resolution
from models.lead import (
    Alert,
    Assignment,
    LeadView,
    Reason,
    Reengagement,
    Rep,
    RoutingDecision,
    Stage,
    lead_view_from_hash,
)
from models.pipeline import (
    AccountPlan,
    AccountResult,
    AccountStatus,
    ApplyResult,
    ApplyStatus,
    EventPlan,
    RepSlot,
    summarise,
)
from models.score import UNGRADED, FitGrade, RuleHit

__all__ = [
    "FORM_FIELDS",
    "UNGRADED",
    "AccountPlan",
    "AccountResult",
    "AccountStatus",
    "Alert",
    "ApplyResult",
    "ApplyStatus",
    "Assignment",
    "Conflict",
    "Event",
    "EventPlan",
    "EventType",
    "FitGrade",
    "InvalidEventError",
    "Kind",
    "LeadView",
    "Link",
    "Merge",
    "MergeStatus",
    "ModelError",
    "Reason",
    "Reengagement",
    "Rep",
    "RepSlot",
    "Resolution",
    "RoutingDecision",
    "RuleHit",
    "Stage",
    "lead_view_from_hash",
    "summarise",
]
