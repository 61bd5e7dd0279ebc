"""Compact encodings of what each lead keeps in Redis (issue 15, target 5: memory per lead).

A lead's ``reasons``, ``recent`` (activity timeline) and ``fields`` (field history)
lists hold one JSON text per entry.  They used to be JSON objects with long key names
(``{"rule": ..., "points": ..., "event_id": ..., "event_type": ..., "ts": ..., "detail": ...,
"hand_raiser": false}``); they are now JSON **arrays**, positional, with trailing
optional items left out.  A reader tells the two apart by the first character: an
object is the old format and is read as before, so a lead written before the
upgrade still shows everything (the formats mix within one list until old entries
age out).  What a reader returns is the same either way.

* Reason: ``[rule, points, event_id, type, ts, detail, hand_raiser?, note?]``; ``type``
  is an index in :data:`EVENT_TYPES` (or the type's name when it has none there);
  ``hand_raiser`` 1 or 0; ``note`` the cap note the Lua step used to append to
  ``detail`` as text: ``0`` for " (once per lead: already counted)", or the text
  ``"G of P"`` for " (capped: G of P)" (the numbers as the Lua step formatted them).
  One event's other reasons (an event often matches two rules) are pushed with it,
  just to its right, as ``[rule, points, detail or null, hand_raiser?, note?]``: the
  same event id, type and time as the whole entry on their left, and null for the
  same detail.  Trimming drops entries from the right, so such an entry never
  outlives the one it refers to, and readers read from the left (index 0).
  Written by apply_event.lua from the heads and tails this module encodes
  (:func:`reason_parts`): the step fills in the granted points and the notes.
* Activity (``recent``): ``[type, ts, event_id, url, title, form_id, campaign]``,
  absent items as null, trailing nulls left out.
* Field change (``fields``): ``[field, new, source, ts, event_id, flags, old?]``;
  ``flags`` bit 0 verified, bit 1 applied; ``old`` only when the field had a value.
  apply_event.lua appends ``flags`` and ``old`` to the head :func:`field_change_head` encodes.

De-duplication (the ``seen`` sorted sets of leads and accounts): an event id that is
32 lowercase hex digits (a uuid's hex: every id the collector mints) is stored as the
byte 0xFF followed by its 16 bytes, any other id as itself.  Ids are UTF-8 text, where
the byte 0xFF never occurs, so the mapping is one-to-one, across both formats too: no
two event ids share a member, and de-duplication is as exact as with the ids
themselves (no hashing, no collisions).  Members are scored with the second (rounded
up) the event was counted, an integer Redis stores in a few bytes instead of a
17-digit decimal text.  :func:`seen_member` is the Python twin of the scripts'
``seen_id``.  A hex id stored before the upgrade (the 32 digits themselves) is still
found: the scripts look up both forms (until such members have aged out of the
window, ``keys.SEEN_WINDOW_S``, this is what keeps their redeliveries duplicates).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from models import Reason

# Event types by the index stored in compact entries.  Append only: an index, once
# written, must keep naming the same type.
EVENT_TYPES: tuple[str, ...] = ("page_view", "page_ping", "email_open", "email_click", "form_fill", "track",
                                "identify", "group", "alias")
_TYPE_CODE = {t: i for i, t in enumerate(EVENT_TYPES)}
_HEX_ID = re.compile(r"[0-9a-f]{32}")
_SUMMARY_KEYS = ("url", "title", "form_id", "campaign")
ONCE_NOTE = " (once per lead: already counted)"


def type_code(event_type: str) -> int | str:
    return _TYPE_CODE.get(event_type, event_type)


def type_name(code: Any) -> str:
    if isinstance(code, int) and 0 <= code < len(EVENT_TYPES):
        return EVENT_TYPES[code]
    return str(code)


def _json(x: Any) -> str:
    return orjson.dumps(x).decode()


# --- reasons ---------------------------------------------------------------------------------------


def reason_parts(reasons: Sequence[Reason]) -> list[tuple[str, str]]:
    """(head, tail) of the compact entry of each of one event's reasons, in the order they are pushed.

    The Lua step writes ``head + points + tail [+ ',' hand_raiser, note] + ']'``.  The last one pushed
    ends up leftmost (LPUSH) and is whole; the others refer to it for the event id, type and time, and
    for the detail when it is the same (null).
    """
    if not reasons:
        return []
    last = reasons[-1]
    out = []
    for r in reasons[:-1]:
        out.append(("[" + _json(r.rule) + ",", "," + ("null" if r.detail == last.detail else _json(r.detail))))
    tail = "," + ",".join(_json(x) for x in (last.event_id, type_code(last.event_type), last.ts, last.detail))
    out.append(("[" + _json(last.rule) + ",", tail))
    return out


def encode_reason(reason: Reason) -> str:
    """A whole compact reason entry (for entries made in Python, e.g. a sales-ready forced by the account)."""
    [(head, tail)] = reason_parts([reason])
    return head + _json(reason.points) + tail + (",1" if reason.hand_raiser else "") + "]"


def _with_note(detail: str, rest: Sequence[Any]) -> str:
    if len(rest) > 1:
        note = rest[1]
        detail += ONCE_NOTE if note == 0 else f" (capped: {note})"
    return detail


def decode_reasons(raws: Iterable[bytes | str]) -> list[Reason]:
    """A lead's stored reasons, newest first, compact or in the old object format (both can be in one list).

    An entry that refers to the event of the whole entry on its left gets that entry's event id, type
    and time (and detail when it has none of its own).
    """
    out: list[Reason] = []
    event_id, code, ts, base = "", "", 0.0, ""
    for raw in raws:
        data = orjson.loads(raw)
        if isinstance(data, dict):
            r = Reason.from_dict(data)
            out.append(r)
            continue
        if len(data) >= 6:
            rule, points, event_id, code, ts, base, *rest = data
            detail = str(base)
        else:
            rule, points, own, *rest = data
            detail = str(base) if own is None else str(own)
        out.append(Reason(rule=str(rule), points=float(points), event_id=str(event_id), event_type=type_name(code),
                          ts=float(ts), detail=_with_note(detail, rest), hand_raiser=bool(rest and rest[0])))
    return out


# --- the activity timeline --------------------------------------------------------------------------


def encode_summary(summary: Mapping[str, Any]) -> str:
    """An activity entry (:func:`models.pipeline.summarise`) in the compact form."""
    items: list[Any] = [type_code(str(summary["type"])), summary["ts"], summary["event_id"]]
    items += [summary.get(k) or None for k in _SUMMARY_KEYS]
    while items[-1] is None:
        items.pop()
    return _json(items)


def decode_summary(raw: bytes | str) -> dict[str, Any]:
    """A stored activity entry as :func:`models.pipeline.summarise` made it, compact or old format."""
    data = orjson.loads(raw)
    if isinstance(data, dict):
        return data
    out: dict[str, Any] = {"type": type_name(data[0]), "ts": data[1], "event_id": data[2]}
    for k, v in zip(_SUMMARY_KEYS, data[3:], strict=False):
        if v:
            out[k] = v
    return out


# --- field history ----------------------------------------------------------------------------------


def field_change_head(name: str, new: str, source: str, ts: float, event_id: str) -> str:
    """The start of a compact field change; the Lua step appends ``flags[,old]]``."""
    return "[" + ",".join(_json(x) for x in (name, new, source, ts, event_id)) + ","


def decode_field_change(raw: bytes | str) -> dict[str, Any]:
    """A stored field change as the old object format had it: field, new, [old,] source, verified, applied, ts,
    event_id."""
    data = orjson.loads(raw)
    if isinstance(data, dict):
        return data
    name, new, source, ts, event_id, flags, *old = data
    out: dict[str, Any] = {"field": name, "new": new, "source": source, "verified": bool(flags & 1),
                           "applied": bool(flags & 2), "ts": ts, "event_id": event_id}
    if old:
        out["old"] = old[0]
    return out


# --- de-duplication ids -----------------------------------------------------------------------------


def seen_member(event_id: str) -> bytes:
    """The member a ``seen`` sorted set holds for ``event_id`` (see the module docstring)."""
    if _HEX_ID.fullmatch(event_id):
        return b"\xff" + bytes.fromhex(event_id)
    return event_id.encode()
