"""The admin API's HTTP plumbing: :class:`ApiError`, JSON answers, and the checked JSON body.

Every non-success answer is ``{"error": code, "detail": text}`` (plus ``problems`` for rules),
built by :func:`error_response` from an :class:`ApiError` or another refusal.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from router.errors import RouterError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSON_TYPES = ("application/json",)


class ApiError(RouterError):
    """An answer other than success: status, code and a detail that names the field or value and the fix."""

    def __init__(self, status: int, code: str, detail: str, *, problems: Sequence[str] = (),
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.problems = tuple(problems)
        self.headers = dict(headers or {})


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                        headers=dict(headers or {}))


def error_response(status: int, code: str, detail: str, problems: Sequence[str] = (),
                   headers: Mapping[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": code, "detail": detail}
    if problems:
        body["problems"] = list(problems)
    return json_response(body, status, headers)



def suggest(word: str, choices: Sequence[str]) -> str:
    """The hint for an unknown name: the closest choice, else the list of choices."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else f"use one of: {', '.join(choices)}"


def kind(value: object) -> str:
    """What a JSON value is, for error details ("a string", "a list", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def num(value: object, default: float = 0.0) -> float:
    """A stored number (Redis hash field), or ``default`` when it is not a finite number."""
    try:
        number = float(str(value))
    except ValueError:
        return default
    return number if math.isfinite(number) else default


def opt_num(value: str | None) -> float | None:
    """A stored number, or None when the field is absent or empty."""
    return num(value) if value not in (None, "") else None


def as_str(x: bytes | str) -> str:
    """A Redis reply as text."""
    return x.decode() if isinstance(x, bytes) else x


@dataclass(frozen=True, slots=True)
class Body:
    """A parsed JSON request body with typed, checked getters (each failure is a 400 naming the key)."""

    data: Mapping[str, Any]

    def _get(self, key: str) -> Any:
        return self.data.get(key)

    def text(self, key: str, *, max_len: int, required: bool = False, min_len: int = 0) -> str | None:
        if key not in self.data:
            if required:
                raise ApiError(400, "missing_key", f"the body needs {key!r}")
            return None
        value = self._get(key)
        if not isinstance(value, str):
            raise ApiError(400, "bad_type", f"{key!r} must be a string, got {kind(value)}")
        if len(value) > max_len:
            raise ApiError(400, "too_long", f"{key!r} is {len(value)} characters; the most is {max_len}")
        if len(value.strip()) < min_len:
            raise ApiError(400, "empty_value", f"{key!r} is empty; give a value")
        return value

    def flag(self, key: str, *, required: bool = False) -> bool | None:
        if key not in self.data:
            if required:
                raise ApiError(400, "missing_key", f"the body needs {key!r}: true or false")
            return None
        value = self._get(key)
        if not isinstance(value, bool):
            raise ApiError(400, "bad_type", f"{key!r} must be true or false, got {kind(value)}")
        return value

    def integer(self, key: str, *, lo: int, hi: int, default: int) -> int:
        if key not in self.data:
            return default
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ApiError(400, "bad_value", f"{key!r} must be a whole number from {lo} to {hi}, got {value!r}"[:300])
        return value
