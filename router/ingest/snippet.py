"""The page snippet the collector serves at ``GET /t/p.js``: a page view, then a visibility heartbeat.

Put ``<script async src="https://COLLECTOR/t/p.js"></script>`` on every page.  It
sends one ``/t/p.gif`` page view (url, referrer, title; UTM tags are read from the
url), then a ``/t/p.gif?ping=1`` heartbeat every :data:`PING_INTERVAL_S` seconds
while the page is visible (``document.visibilityState``), at most
:data:`MAX_PINGS` per page.  The pings are time on site only: the worker counts
each at most ``scoring.touch.PING_CAP_S`` seconds and a session at most
``SESSION_TIME_CAP_S``, measured on the collector's clock, so a client that
pings faster or forever cannot inflate the time.  The script reads nothing from
the request: it is a constant, safe to cache.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

PING_INTERVAL_S: Final = 15
MAX_PINGS: Final = 480  # two hours of visible time per page

SNIPPET: Final = (
    "(function(w,d){var s=d.currentScript,b=s&&s.src?s.src.replace(/\\/t\\/p\\.js.*$/,''):'';"
    "function u(x){var p={url:w.location.href,ref:d.referrer,title:d.title},a=[],k;"
    "for(k in x)p[k]=x[k];for(k in p)if(p[k])a.push(encodeURIComponent(k)+'='+encodeURIComponent(p[k]));"
    "return b+'/t/p.gif?'+a.join('&');}"
    "function hit(x){var i=new Image(1,1);i.src=u(x);}"
    "hit({});var n=0;w.setInterval(function(){"
    f"if(d.visibilityState==='visible'&&n<{MAX_PINGS}){{n++;hit({{ping:'1'}});}}}},{PING_INTERVAL_S * 1000});"
    "})(window,document);\n"
)


async def snippet(request: web.Request) -> web.Response:
    """``GET /t/p.js``: the snippet (a constant; cacheable for an hour)."""
    return web.Response(text=SNIPPET, content_type="application/javascript", charset="utf-8",
                        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})
