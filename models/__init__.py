"""Data shapes shared by every layer.  Imports nothing of ours."""

from models.errors import InvalidEventError, ModelError
from models.events import FORM_FIELDS, Event, EventType
from models.lead import Alert, Assignment, LeadView, Reason, Rep, RoutingDecision, Stage

__all__ = [
    "FORM_FIELDS",
    "Alert",
    "Assignment",
    "Event",
    "EventType",
    "InvalidEventError",
    "LeadView",
    "ModelError",
    "Reason",
    "Rep",
    "RoutingDecision",
    "Stage",
]
