"""The console's Live page: crossings and alerts as they happen, pushed; delivery per channel; dead letters.

* ``GET /console/live`` renders the latest entries of the live feed (router/storage/live.py), each
  alert's delivery status per channel (the rep's Slack DM, the team channel, email: sent, failed,
  retrying, queued for the digest) and the dead-letter list, then ``/console/static/live.js`` (a
  few lines of plain EventSource code, served from our origin so the CSP needs no inline script)
  follows ``GET /console/live/events``.
* ``/console/live/events`` is a Server-Sent Events stream: one ``entry`` event per feed entry, its
  stream id as the SSE id, so a browser that reconnects sends ``Last-Event-ID`` and gets exactly
  what it missed (``?after=ID`` does the same on the first connect).  One reader task per app
  (:class:`LiveHub`) blocks on the stream and fans entries out to bounded per-browser queues; a
  browser that falls behind is resynced from the stream.  A comment line every
  ``LEADROUTER_ADMIN_CONSOLE_LIVE_HEARTBEAT_S`` finds browsers that went away: their handler ends,
  unsubscribes, and the reader stops when nobody listens.  The session is checked then too: a stream
  ends when its session does (sign-out, expiry, a revoked token).  A session holds at most
  ``LEADROUTER_ADMIN_CONSOLE_LIVE_STREAMS_PER_SESSION`` streams and the admin at most
  ``LEADROUTER_ADMIN_CONSOLE_LIVE_STREAMS_MAX``; past that a stream is refused with 429.
* Reps see only entries for themselves (the rep the lead was routed or the alert sent to);
  readonly sees everything but cannot replay; ops replay a dead letter (``POST
  /console/live/dead/{id}/replay``, CSRF-checked), through the same sender the worker uses, on the
  letter's channel only (a channel already delivered is skipped), audited as ``alert.replay``.
* Entries carry ids, not names: the name shown is looked up when the entry is shown, and a
  forgotten lead shows none.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from redis.exceptions import RedisError

from models import Alert
from router.admin.audit import audit
from router.admin.auth import Principal, Role
from router.admin.console.html import csrf_field, h, page, when
from router.admin.console.session import Session, SessionStore
from router.admin.http import ApiError
from router.admin.leads import LeadHandlers
from router.alerts.sender import AlertSender, TeamWebhooks, build_sender
from router.storage import keys
from router.storage.live import STREAM_ID, LiveFeed
from router.storage.pii import SealError, Vault

log = logging.getLogger(__name__)

CHANNELS = (("slack_bot", "Slack DM"), ("slack_webhook", "Team channel"), ("email", "Email"))
LABELS = {"slack_bot": "Slack DM", "slack_webhook": "team channel", "email": "email", "digest": "digest"}
SHOWN = 50
QUEUE_MAX = 256
BACKFILL_MAX = 1000
LIVE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; connect-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

Item = dict[str, Any]
CLOSE: Item = {"close": True}  # put on every stream's queue when the app shuts down


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def visible(principal: Principal, item: Item) -> bool:
    """Reps see the entries about themselves; ops and readonly see all."""
    return principal.role is not Role.REP or item.get("rep") == principal.rep_id


class LiveHub:
    """One reader of the live stream per app, fanning entries out to the open streams' queues."""

    def __init__(self, feed: LiveFeed, enrich: Callable[[str, dict[str, str]], Awaitable[Item]], *,
                 block_ms: int = 2000) -> None:
        self.feed = feed
        self.enrich = enrich
        self.block_ms = block_ms
        self.subscribers: set[asyncio.Queue[Item | None]] = set()
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def subscribe(self) -> asyncio.Queue[Item | None]:
        """A queue of the entries from now on (None: fell behind, resync from the stream)."""
        q: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=QUEUE_MAX)
        self.subscribers.add(q)
        if self.task is None or self.task.done():
            self.ready = asyncio.Event()
            self.task = asyncio.create_task(self._run(), name="console-live-hub")
        await self.ready.wait()
        return q

    def unsubscribe(self, q: asyncio.Queue[Item | None]) -> None:
        self.subscribers.discard(q)

    async def _run(self) -> None:
        last = "0-0"
        while True:
            try:
                last = await self.feed.last_id()
                break
            except RedisError as exc:
                log.warning("live feed: Redis failed (%r); retrying", exc)
                await asyncio.sleep(1.0)
        self.ready.set()
        while self.subscribers:
            try:
                rows = await self.feed.wait(last, self.block_ms, 200)
            except RedisError as exc:
                log.warning("live feed: reading the stream failed (%r); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            for entry_id, fields in rows:
                last = entry_id
                try:
                    item = await self.enrich(entry_id, fields)
                except RedisError as exc:  # the name could not be looked up: send the entry without it
                    log.warning("live feed: no name for entry %s (%r)", entry_id, exc)
                    item = LivePages.item(entry_id, fields, {})
                for q in list(self.subscribers):
                    try:
                        q.put_nowait(item)
                    except asyncio.QueueFull:  # that browser is behind: it resyncs from the stream
                        while not q.empty():
                            q.get_nowait()
                        q.put_nowait(None)

    def shutdown(self) -> None:
        """Tell every open stream to end now (the app is stopping)."""
        for q in list(self.subscribers):
            while not q.empty():
                q.get_nowait()
            q.put_nowait(CLOSE)

    async def close(self) -> None:
        self.subscribers.clear()
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass


class LivePages:
    """The Live page, its event stream and the dead-letter Replay."""

    def __init__(self, admin: LeadHandlers, html_response: Callable[[str], web.Response],
                 see_other: Callable[[str], web.Response], sessions: SessionStore) -> None:
        self.admin = admin
        self.sessions = sessions  # an open stream ends when its session does (sign-out, revoked token)
        self.html_response = html_response  # pages.py's answers (its security headers)
        self.see_other = see_other
        self.feed = LiveFeed(admin.redis)
        self.hub = LiveHub(self.feed, self.enrich)
        self.heartbeat_s = admin.settings.admin.console_live_heartbeat_s
        self.streams = 0  # open event streams (tests check a closed browser frees its stream)
        self.by_session: dict[str, int] = {}  # open streams per console session
        self.per_session = admin.settings.admin.console_live_streams_per_session
        self.streams_max = admin.settings.admin.console_live_streams_max
        self._sender: AlertSender | None = None
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        await self.hub.close()
        if self._sender is not None:
            await self._sender.aclose()  # its SMTP connections
        if self._session is not None:
            await self._session.close()

    # --- entries ------------------------------------------------------------------------------

    async def names(self, lead_ids: set[str]) -> dict[str, str]:
        hashes = await self.admin.store.lead_hashes(sorted(x for x in lead_ids if x))
        out = {}
        for lid, d in hashes.items():
            if not d or d.get("forgotten") == "1":
                out[lid] = "(forgotten)" if d.get("forgotten") == "1" else lid[:9]
                continue
            name = " ".join(x for x in (d.get("f:first_name"), d.get("f:last_name")) if x)
            out[lid] = name or d.get("email", "") or lid[:9]
        return out

    @staticmethod
    def item(entry_id: str, f: dict[str, str], names: dict[str, str]) -> Item:
        try:
            ts = float(f.get("ts") or 0)
        except ValueError:
            ts = 0.0
        keep = ("kind", "lead", "rep", "aid", "channel", "status", "attempt", "error", "trigger", "score", "team",
                "step", "rule", "reason", "who")
        out: Item = {k: f[k] for k in keep if f.get(k)}
        out.update(id=entry_id, ts=ts, when=when(ts), name=names.get(f.get("lead", ""), ""))
        return out

    async def enrich(self, entry_id: str, f: dict[str, str]) -> Item:
        return self.item(entry_id, f, await self.names({f.get("lead", "")}))

    async def items(self, rows: list[tuple[str, dict[str, str]]]) -> list[Item]:
        names = await self.names({f.get("lead", "") for _, f in rows})
        return [self.item(i, f, names) for i, f in rows]

    # --- the page -----------------------------------------------------------------------------

    @staticmethod
    def row(item: Item) -> str:
        label = LABELS.get(item.get("channel", ""), item.get("channel", ""))
        what = {"crossing": "crossed, routed", "held": "crossed, held", "alert": f"alert: {item.get('step', '')}",
                "delivery": f"{label} {item.get('status', '')}",
                "replay": f"replay {label}: {item.get('status', '')}"}.get(item.get("kind", ""), "")
        lead = item.get("lead", "")
        name = h(item.get("name") or lead[:9])
        link = f'<a href="/console/leads/{h(lead)}">{name}</a>' if lead else "-"
        extra = " ".join(str(item[k]) for k in ("trigger", "score", "error") if item.get(k))
        return (f'<tr data-id="{h(item["id"])}" data-kind="{h(item.get("kind", ""))}"><td>{h(item["when"])}</td>'
                f"<td>{h(what)}</td><td>{link}</td><td>{h(item.get('rep', ''))}</td>"
                f'<td class="opt">{h(extra)}</td></tr>')

    @staticmethod
    def deliveries(items: list[Item]) -> str:
        by_aid: dict[str, dict[str, Any]] = {}
        for it in items:
            aid = it.get("aid", "")
            if not aid or it.get("kind") not in ("crossing", "alert", "delivery", "replay"):
                continue
            row = by_aid.setdefault(aid, {"lead": it.get("lead", ""), "name": it.get("name", ""),
                                          "rep": it.get("rep", ""), "ch": {}})
            if it.get("kind") in ("delivery", "replay") and it.get("channel"):
                row["ch"][it["channel"]] = it.get("status", "")
        rows = []
        for aid, row in reversed(list(by_aid.items())[-SHOWN:]):
            cells = "".join(f'<td data-channel="{c}" class="st-{h(row["ch"].get(c, ""))}">'
                            f'{h(row["ch"].get(c, "-"))}</td>' for c, _ in CHANNELS)
            rows.append(f'<tr data-aid="{h(aid)}"><td><a href="/console/leads/{h(row["lead"])}">'
                        f'{h(row["name"] or row["lead"][:9])}</a></td><td>{h(row["rep"])}</td>{cells}</tr>')
        head = "".join(f"<th>{h(label)}</th>" for _, label in CHANNELS)
        return (f'<table id="deliveries"><thead><tr><th>Lead</th><th>Rep</th>{head}</tr></thead>'
                f'<tbody>{"".join(rows)}</tbody></table>')

    async def dead_table(self, session: Session) -> str:
        principal = session.principal
        rows = await self.feed.dead(SHOWN * 4)
        names = await self.names({f.get("lead", "") for _, f in rows})
        pipe = self.admin.redis.pipeline(transaction=False)
        for _, f in rows:
            pipe.hkeys(keys.alert_sent(f.get("aid", "")))
        sent = await pipe.execute()
        out = []
        for (entry_id, f), done in zip(rows, sent, strict=True):
            item = self.item(entry_id, f, names)
            if not visible(principal, item):
                continue
            delivered = f.get("channel", "") in {x.decode() if isinstance(x, bytes) else x for x in done}
            if delivered:
                action = '<span class="muted">sent since</span>'
            elif principal.role is Role.OPS:
                action = (f'<form method="post" class="inline" action="/console/live/dead/{h(entry_id)}/replay">'
                          f'{csrf_field(session.csrf)}<button type="submit" class="replay">Replay</button></form>')
            else:
                action = '<span class="muted">ops can replay</span>'
            lead = f.get("lead", "")
            link = f'<a href="/console/leads/{h(lead)}">{h(item["name"] or lead[:9])}</a>' if lead else "digest"
            out.append(f'<tr data-id="{h(entry_id)}"><td>{h(item["when"])}</td><td>{link}</td>'
                       f'<td>{h(f.get("rep", ""))}</td><td>{h(f.get("channel", ""))}</td>'
                       f'<td class="opt">{h(f.get("kind", ""))}, {h(f.get("attempts", ""))} attempt(s): '
                       f'{h(f.get("error", ""))}</td><td>{action}</td></tr>')
            if len(out) >= SHOWN:
                break
        if not out:
            return '<p class="muted" id="dead-letters">No dead letters.</p>'
        return ('<table id="dead-letters"><thead><tr><th>When</th><th>Lead</th><th>Rep</th><th>Channel</th>'
                f'<th class="opt">Why</th><th></th></tr></thead><tbody>{"".join(out)}</tbody></table>')

    async def page(self, request: web.Request, session: Session) -> web.StreamResponse:
        principal = session.principal
        rows = await self.feed.tail(SHOWN * 4)
        items = [it for it in await self.items(rows) if visible(principal, it)]
        after = rows[-1][0] if rows else await self.feed.last_id()
        done = {"sent": "Replayed: sent.", "already": "Already sent on that channel; removed from the list.",
                "again": "Failed again; it is back on the list.", "forgotten": "The lead was forgotten; removed.",
                "config": "That channel is not configured on the admin service; nothing was sent."}
        msg = done.get(request.query.get("done", ""), "")
        body = (f'<h1>Live</h1>{f"<p class=msg id=done>{h(msg)}</p>" if msg else ""}'
                '<p class="muted">Crossings and alerts appear here as they happen. '
                '<span id="live-status">connecting…</span></p>'
                '<h2>Feed</h2><table id="live"><thead><tr><th>When</th><th>What</th><th>Lead</th><th>Rep</th>'
                f'<th class="opt">Detail</th></tr></thead><tbody id="live-feed" data-after="{h(after)}">'
                f'{"".join(self.row(it) for it in reversed(items[-SHOWN:]))}</tbody></table>'
                f"<h2>Delivery</h2>{self.deliveries(items)}"
                f"<h2>Dead letters</h2>{await self.dead_table(session)}"
                '<script src="/console/static/live.js"></script>')
        resp = self.html_response(page("Live", body, principal=principal, csrf=session.csrf))
        resp.headers["Content-Security-Policy"] = LIVE_CSP
        return resp

    # --- the event stream ---------------------------------------------------------------------

    async def events(self, request: web.Request, session: Session) -> web.StreamResponse:
        principal = session.principal
        start = request.headers.get("Last-Event-ID", "") or request.query.get("after", "")
        if not STREAM_ID.match(start):
            start = ""
        sid = session.session_id
        if self.by_session.get(sid, 0) >= self.per_session or self.streams >= self.streams_max:
            # EventSource does not retry an answer other than 200: the tab shows the page without live updates.
            mine = self.by_session.get(sid, 0) >= self.per_session
            text = (f"too many Live streams open for this session ({self.per_session}): close a Live tab "
                    "(LEADROUTER_ADMIN_CONSOLE_LIVE_STREAMS_PER_SESSION)" if mine else
                    f"too many Live streams open on this admin ({self.streams_max}); try again later "
                    "(LEADROUTER_ADMIN_CONSOLE_LIVE_STREAMS_MAX)")
            return web.Response(status=429, text=text, headers={"Cache-Control": "no-store", "Retry-After": "30"})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self.streams += 1
        self.by_session[sid] = self.by_session.get(sid, 0) + 1
        queue: asyncio.Queue[Item | None] | None = None
        try:
            queue = await self.hub.subscribe()
            # Where this stream starts is fixed before the browser hears back: whatever is written
            # once it has the answer's headers is after it, so it is sent.
            last = start or await self.feed.last_id()
            await resp.prepare(request)
            await resp.write(b"retry: 2000\n\n")
            last = await self._backfill(resp, principal, last)
            while True:
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), self.heartbeat_s)
                except TimeoutError:
                    if await self.sessions.get(session.session_id) is None:
                        break  # signed out, expired or revoked meanwhile: the browser goes to sign-in
                    await resp.write(b": keepalive\n\n")
                    continue
                if item is CLOSE:
                    break
                if item is None:
                    last = await self._backfill(resp, principal, last)
                    continue
                if _id_key(item["id"]) <= _id_key(last):
                    continue
                last = item["id"]
                if visible(principal, item):
                    await resp.write(self.sse(item))
        except ConnectionError:  # the browser went away mid-write
            pass
        finally:
            if queue is not None:
                self.hub.unsubscribe(queue)
            self.streams -= 1
            left = self.by_session.pop(sid, 1) - 1
            if left > 0:
                self.by_session[sid] = left
        return resp

    @staticmethod
    def sse(item: Item) -> bytes:
        return b"id: " + str(item["id"]).encode() + b"\nevent: entry\ndata: " + orjson.dumps(item) + b"\n\n"

    async def _backfill(self, resp: web.StreamResponse, principal: Principal, last: str) -> str:
        while True:
            rows = await self.feed.after(last, 200)
            for it in await self.items(rows):
                last = it["id"]
                if visible(principal, it):
                    await resp.write(self.sse(it))
            if len(rows) < 200 or _id_key(last) >= _id_key(await self.feed.last_id()):
                return last

    # --- replay -------------------------------------------------------------------------------

    async def sender(self) -> AlertSender:
        """The worker's sender, built here (same channels, retries and sent-marks) on first use."""
        if self._sender is None:
            settings = self.admin.settings
            self._session = aiohttp.ClientSession()

            async def dead_letter(key: str, value: bytes) -> None:
                # The admin service has no Kafka producer: a replay that fails again goes back on the
                # console's dead-letter list (the sender keeps it there), not on the topic.
                log.warning("console replay of %s failed again; it is back on the console's dead-letter list", key)

            self._sender = build_sender(settings.alerts, self.admin.store, self._session, dead_letter,
                                        team_webhooks=TeamWebhooks(self.admin.routing),
                                        vault=Vault.from_settings(self.admin.redis, settings.tokens))
        return self._sender

    async def replay(self, request: web.Request, session: Session) -> web.StreamResponse:
        entry_id = request.match_info["entry_id"]
        entry = await self.feed.dead_one(entry_id)
        if entry is None:
            raise ApiError(404, "unknown_dead_letter", "That dead letter is gone (replayed already, or trimmed); "
                                                       "reload the Live page.")
        sender = await self.sender()
        channel = entry.get("channel", "")
        outcome = await self._replay(sender, entry, channel)
        if outcome != "config":
            await self.feed.dead_done(entry_id)
        status = {"sent": "sent", "already": "sent", "again": "failed", "forgotten": "dropped",
                  "config": "failed"}[outcome]
        await self.feed.note("replay", lead=entry.get("lead", ""), rep=entry.get("rep", ""), aid=entry.get("aid", ""),
                             channel=channel, status=status, who=session.principal.name, now=self.admin.clock())
        await audit(self.admin, "alert.replay", via="console", lead_id=entry.get("lead", ""), target=channel,
                    detail=f"{entry.get('aid', '')}: {outcome}")
        log.info("console: dead letter %s (%s on %s) replayed by %s: %s", entry_id, entry.get("aid"), channel,
                 session.principal.name, outcome)
        return self.see_other(f"/console/live?done={outcome}")

    @staticmethod
    async def _replay(sender: AlertSender, entry: dict[str, str], channel: str) -> str:
        if channel not in sender.channels:
            return "config"
        try:
            record = orjson.loads(entry.get("record", "{}"))
            if "alert_sealed" in record or "alert" in record:
                if "alert_sealed" in record:
                    if sender.vault is None:
                        return "config"
                    opened = await sender.vault.open_alert(record["alert_sealed"])
                    if opened is None:
                        return "forgotten"
                else:
                    opened = record["alert"]
                outcome = await sender.send_alert(Alert.from_dict(opened), channels={channel}, digest=False)
            else:
                digest = await sender.open_digest_record(record)
                outcome = await sender.send_digest(digest, channels={channel})
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, SealError) as exc:
            raise ApiError(422, "invalid_dead_letter", f"That dead letter cannot be replayed: {type(exc).__name__}: "
                                                       f"{exc}"[:300]) from None
        if not outcome.results:
            return "already"
        return "sent" if outcome.results[0].ok else "again"


LIVE_JS = """(function () {
  "use strict";
  var feed = document.getElementById("live-feed");
  var status = document.getElementById("live-status");
  if (!feed || !window.EventSource) { if (status) { status.textContent = "live updates need a newer browser"; } return; }
  var after = feed.getAttribute("data-after") || "";
  var es = new EventSource("/console/live/events" + (after ? "?after=" + encodeURIComponent(after) : ""));
  es.onopen = function () { status.textContent = "live"; };
  es.onerror = function () { status.textContent = "reconnecting…"; };
  function cell(tr, text, cls) { var td = document.createElement("td"); td.textContent = text; if (cls) { td.className = cls; } tr.appendChild(td); return td; }
  function leadCell(tr, e) {
    var td = document.createElement("td");
    if (e.lead) { var a = document.createElement("a"); a.href = "/console/leads/" + encodeURIComponent(e.lead); a.textContent = e.name || e.lead.slice(0, 9); td.appendChild(a); } else { td.textContent = "-"; }
    tr.appendChild(td);
  }
  var labels = {slack_bot: "Slack DM", slack_webhook: "team channel", email: "email", digest: "digest"};
  function what(e) {
    var ch = labels[e.channel] || e.channel || "";
    if (e.kind === "crossing") { return "crossed, routed"; }
    if (e.kind === "held") { return "crossed, held"; }
    if (e.kind === "alert") { return "alert: " + (e.step || ""); }
    if (e.kind === "replay") { return "replay " + ch + ": " + (e.status || ""); }
    return ch + " " + (e.status || "");
  }
  function delivery(e) {
    var table = document.getElementById("deliveries");
    if (!table || !e.aid) { return; }
    var row = table.querySelector('tr[data-aid="' + CSS.escape(e.aid) + '"]');
    if (!row) {
      row = document.createElement("tr"); row.setAttribute("data-aid", e.aid);
      leadCell(row, e); cell(row, e.rep || "");
      ["slack_bot", "slack_webhook", "email"].forEach(function (c) { var td = cell(row, "-"); td.setAttribute("data-channel", c); });
      table.tBodies[0].insertBefore(row, table.tBodies[0].firstChild);
    }
    if ((e.kind === "delivery" || e.kind === "replay") && e.channel) {
      var td = row.querySelector('td[data-channel="' + CSS.escape(e.channel) + '"]');
      if (td) { td.textContent = e.status || ""; td.className = "st-" + (e.status || ""); }
    }
  }
  es.addEventListener("entry", function (ev) {
    var e = JSON.parse(ev.data);
    var tr = document.createElement("tr");
    tr.setAttribute("data-id", e.id); tr.setAttribute("data-kind", e.kind || ""); tr.className = "fresh";
    cell(tr, e.when || ""); cell(tr, what(e)); leadCell(tr, e); cell(tr, e.rep || "");
    cell(tr, [e.trigger, e.score, e.error].filter(Boolean).join(" "), "opt");
    feed.insertBefore(tr, feed.firstChild);
    while (feed.rows.length > 200) { feed.deleteRow(-1); }
    delivery(e);
  });
})();
"""


async def live_js(request: web.Request) -> web.StreamResponse:
    resp = web.Response(text=LIVE_JS, content_type="text/javascript", charset="utf-8")
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp
