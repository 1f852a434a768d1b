"""The status page at /: for a person, rendered here from the /stats figures (no front-end
build). It refreshes its main part every few seconds (``?part=main``, rendered by the same
function) and, once the admin token is entered (kept in sessionStorage, sent as
X-Admin-Token so that Authorization stays free for client authentication), shows buttons for
the admin actions.

``render_page`` and ``render_main`` are pure: figures and a clock in, HTML out. Times are shown
as dates and ages, sizes with units, never epoch floats or raw byte counts.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from proxy.web.ops import figures

REFRESH_SECONDS = 5
NONE = "-"  # a figure not known (yet)
ERRORS_KEPT = 20
_LINE_MAX = 300


class ErrorRing(logging.Handler):
    """The last warnings and errors this process logged, for the status page (bounded)."""

    def __init__(self, size: int = ERRORS_KEPT) -> None:
        super().__init__(logging.WARNING)
        self._lines: deque[dict[str, Any]] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break logging
            message = str(record.msg)
        self._lines.append(
            {
                "time": record.created,
                "level": record.levelname,
                "logger": record.name,
                "message": message[:_LINE_MAX],
            }
        )

    def recent(self) -> list[dict[str, Any]]:
        """Newest first."""
        return list(reversed(self._lines))


@contextmanager
def keep_errors(size: int = ERRORS_KEPT) -> Iterator[ErrorRing]:
    """An ErrorRing on the root logger for as long as the server runs."""
    ring = ErrorRing(size)
    root = logging.getLogger()
    root.addHandler(ring)
    try:
        yield ring
    finally:
        root.removeHandler(ring)


# -- formatting ------------------------------------------------------------------------------


def size(value: object) -> str:
    """Bytes with a unit: ``496.4 MB``."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return NONE
    amount = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(amount) < 1000 or unit == "TB":
            return f"{int(amount)} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 2 * 86400:
        hours, rest = divmod(int(seconds), 3600)
        return f"{hours} h {rest // 60} min" if rest >= 60 else f"{hours} h"
    return f"{int(seconds // 86400)} days"


def age(then: object, now: float) -> str:
    """``3 min ago``; ``never`` for no time."""
    if not isinstance(then, int | float) or isinstance(then, bool):
        return "never"
    if now - then < 5:
        return "just now"
    return duration(now - then) + " ago"


def date(then: object) -> str:
    if not isinstance(then, int | float) or isinstance(then, bool):
        return NONE
    return datetime.fromtimestamp(then, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def when(then: object, now: float) -> str:
    """An age, with the date on hover."""
    return f'<time title="{escape(date(then))}">{escape(age(then, now))}</time>'


def percent(ratio: object) -> str:
    return f"{ratio * 100:.1f}%" if isinstance(ratio, int | float) else NONE


def _bar(fraction: float) -> str:
    width = max(0.0, min(1.0, fraction)) * 100
    return f'<span class="bar"><span style="width:{width:.1f}%"></span></span>'


# -- parts -----------------------------------------------------------------------------------


def chart(rows: list[dict[str, int]], now: float) -> str:
    """Requests per minute over the last hour as an inline SVG: hits, misses, the rest."""
    width, height, top = 600, 120, 14
    peak = max([r["requests"] for r in rows] + [1])
    step = width / max(len(rows), 1)
    bars = []
    for i, row in enumerate(rows):
        x = i * step
        y = float(height)
        other = row["requests"] - row["hits"] - row["misses"]
        for value, cls in ((row["hits"], "h"), (row["misses"], "m"), (other, "o")):
            if value <= 0:
                continue
            h = value / peak * (height - top)
            y -= h
            bars.append(
                f'<rect class="{cls}" x="{x:.1f}" y="{y:.1f}" width="{max(step - 1, 1):.1f}" '
                f'height="{h:.1f}"></rect>'
            )
        minute = datetime.fromtimestamp(row["minute"], UTC).strftime("%H:%M")
        bars.append(
            f'<rect class="t" x="{x:.1f}" y="0" width="{step:.1f}" height="{height}">'
            f"<title>{minute} UTC: {row['requests']} requests, {row['hits']} hits, "
            f"{row['misses']} misses</title></rect>"
        )
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height + 14}" width="{width}" '
        f'height="{height + 14}" role="img" aria-label="requests per minute, last hour">'
        f'<text x="0" y="10">{peak} / min</text>'
        f'<line x1="0" y1="{height}" x2="{width}" y2="{height}"></line>'
        + "".join(bars)
        + f'<text x="0" y="{height + 12}">60 min ago</text>'
        f'<text x="{width}" y="{height + 12}" text-anchor="end">now</text></svg>'
    )


def _table(head: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _figure(label: str, value: str, note: str = "", key: str = "") -> str:
    data = f' data-figure="{escape(key)}"' if key else ""
    small = f"<small>{note}</small>" if note else ""
    return f'<div class="fig"><b{data}>{value}</b><span>{escape(label)}</span>{small}</div>'


def _cache(data: dict[str, Any]) -> str:
    used = data["cache"]["bytes"]
    cap = data.get("max_cache_size")
    if isinstance(cap, int) and cap > 0:
        note = f"of {escape(size(cap))} ({used / cap * 100:.0f}%) {_bar(used / cap)}"
    else:
        note = "no size cap"
    files = f"{data['cache']['files']} files, {data['cache']['projects']} projects"
    return _figure("in the cache", escape(size(used)), f"{note}<br>{escape(files)}", "cache")


def _upstream(data: dict[str, Any], now: float) -> str:
    if data.get("offline"):
        return "<p>Offline: the upstream is never asked.</p>"
    health = data.get("upstream_health") or {}
    errors: dict[str, int] = dict(data.get("upstream_errors_by_origin") or {})
    entries = []
    if health:
        # The index's own breaker is the snapshot's top level; file hosts are under "origins".
        entries.append({**health, "origin": health.get("origin", "index")})
        entries += list(health.get("origins", []))
    rows = []
    for entry in entries:
        origin = str(entry["origin"])
        circuit = str(entry.get("circuit", "?"))
        probe = entry.get("probe_in_seconds")
        rows.append(
            [
                escape(origin),
                f'<span class="c-{escape(circuit)}">{escape(circuit)}</span>'
                + (f" (probe in {duration(probe)})" if isinstance(probe, int | float) else ""),
                str(entry.get("consecutive_failures", 0)),
                str(entry.get("times_opened", 0)),
                str(errors.pop(origin, 0)),
            ]
        )
    for origin, count in sorted(errors.items(), key=lambda kv: -kv[1]):
        rows.append([escape(origin), NONE, NONE, NONE, str(count)])
    table = _table(
        ["origin", "breaker", "failures in a row", "times opened", "errors"],
        rows,
        "No upstream requests yet.",
    )
    return (
        f"<p>Upstream <code>{escape(str(data.get('upstream', '')))}</code>: "
        f"{data['upstream_errors']} failed fetches in all.</p>{table}"
        "<p class=\"muted\">Breakers are this worker's; error counts are all workers'.</p>"
    )


def _prefetch(data: dict[str, Any], now: float) -> str:
    prefetch = data.get("prefetch")
    if not isinstance(prefetch, dict):
        return '<p class="muted">The prefetcher is not part of this server.</p>'
    state = str(prefetch.get("state", "?"))
    if state == "never run":
        return '<p>Never run. <span class="muted">Start a pass with the admin token.</span></p>'
    last = prefetch.get("last_run") or {}
    mirror, upstream, lag = (
        prefetch.get("mirror_serial"),
        prefetch.get("upstream_serial"),
        prefetch.get("lag"),
    )
    lines = [f'<p>State: <b data-figure="prefetch-state">{escape(state)}</b>']
    if state == "running":
        queue, held = prefetch.get("queue"), prefetch.get("projects")
        lines.append(f" since {when(last.get('started'), now)}")
        if isinstance(queue, int):
            lines.append(f"; {queue} projects left in the queue")
            if isinstance(held, int) and held + queue > 0:  # as far as the mirror has come
                lines.append(f" {_bar(held / (held + queue))} {held / (held + queue):.0%}")
    lines.append("</p>")
    serial = f"mirror serial <b>{escape(str(mirror))}</b>"
    if upstream is not None:
        serial += f", upstream {escape(str(upstream))}"
    if isinstance(lag, int):
        serial += f" ({lag} changes to catch up)" if lag > 0 else " (caught up)"
    finished = last.get("finished")
    if last.get("result") == "ok" and isinstance(finished, int | float):
        if lag == 0 and now - finished < 60:
            serial += f"; <b>up to date</b> (last in step {when(finished, now)})"
        else:  # the upstream may have moved since the last pass: that is how far behind
            behind = escape(duration(now - finished))
            serial += f"; <b>{behind} behind</b> (last in step {when(finished, now)})"
    lines.append(f"<p>{serial}</p>")
    if last.get("started") is not None:
        result = str(last.get("result") or "running")
        seconds = last.get("seconds")
        took = f", took {duration(seconds)}" if isinstance(seconds, int | float) else ""
        lines.append(
            f'<p>Last pass: <span class="r-{escape(result)}">{escape(result)}</span>, started '
            f"{when(last.get('started'), now)}{took}"
            + (f" — {escape(str(last['message']))}" if last.get("message") else "")
            + "</p>"
        )
    if prefetch.get("last_error"):
        lines.append(f'<p class="err">Last error: {escape(str(prefetch["last_error"]))}</p>')
    held = [f"{prefetch[k]} {k}" for k in ("projects", "files") if k in prefetch]
    if held:
        lines.append(
            f"<p>Mirror holds {escape(', '.join(held))}, {escape(size(prefetch.get('bytes')))}</p>"
        )
    return "".join(lines)


def _projects(data: dict[str, Any]) -> str:
    rows = []
    for entry in data.get("top_projects", []):
        name = escape(str(entry["project"]))
        rows.append(
            [
                f'<a href="simple/{name}/">{name}</a>',
                str(entry["requests"]),
                f'<button class="adm" data-method="POST" data-path="admin/projects/{name}/refresh">'
                f'refresh</button> <button class="adm" data-method="DELETE" '
                f'data-path="admin/projects/{name}" data-confirm="Forget {name}?">forget</button>',
            ]
        )
    return _table(["project", "requests", ""], rows, "No project asked yet.")


def _errors(data: dict[str, Any], now: float) -> str:
    items = [
        f"<li>{when(e.get('time'), now)} <b>{escape(str(e.get('level')))}</b> "
        f"<code>{escape(str(e.get('logger')))}</code> {escape(str(e.get('message')))}</li>"
        for e in data.get("recent_errors", [])
    ]
    if not items:
        return '<p class="muted">No warnings or errors logged by this worker.</p>'
    return f'<ul class="errors">{"".join(items)}</ul>'


def render_main(data: dict[str, Any], now: float) -> str:
    """The part of the page that refreshes itself."""
    hour = data.get("last_hour", [])
    hour_requests = sum(r["requests"] for r in hour)
    hour_hits = sum(r["hits"] for r in hour)
    hour_served = hour_hits + sum(r["misses"] for r in hour)
    hour_ratio = percent(hour_hits / hour_served) if hour_served else NONE
    started = now - float(data.get("uptime_seconds", 0))
    mode = "offline" if data.get("offline") else "online"
    figures_row = "".join(
        [
            _figure(
                "hit ratio",
                escape(percent(data.get("hit_ratio"))),
                f"{data['hits']} hits, {data['misses']} misses; last hour {hour_ratio}",
                "hit-ratio",
            ),
            _figure(
                "requests",
                str(data["requests"]),
                f"{hour_requests} in the last hour; {data['not_found']} not found",
                "requests",
            ),
            _figure(
                "served",
                escape(size(data["bytes_served"])),
                f"fetched {escape(size(data['bytes_fetched']))} from the upstream",
                "bytes-served",
            ),
            _cache(data),
        ]
    )
    return (
        f'<p class="muted">{escape(mode)}, this worker up {escape(duration(now - started))} '
        f"(since {escape(date(started))}); updated {escape(date(now))}</p>"
        f'<div class="figs">{figures_row}</div>'
        f"<h2>Requests per minute, last hour</h2>{chart(hour, now)}"
        '<p class="legend"><i class="h"></i>hits <i class="m"></i>misses '
        '<i class="o"></i>other (not found, errors, redirects)</p>'
        f'<div class="cols"><section><h2>Top projects</h2>{_projects(data)}</section>'
        f"<section><h2>Prefetch</h2>{_prefetch(data, now)}</section></div>"
        f"<h2>Upstream</h2>{_upstream(data, now)}"
        f"<h2>Recent warnings and errors</h2>{_errors(data, now)}"
    )


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:70em;padding:0 1em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.4em}code{background:#eee;padding:1px 4px}
.muted{color:#777}.figs{display:flex;flex-wrap:wrap;gap:1em}
.fig{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:12em}
.fig b{display:block;font-size:1.6em}.fig span{display:block;color:#555}.fig small{color:#777}
.bar{display:inline-block;width:8em;height:.6em;background:#eee;vertical-align:middle}
.bar span{display:block;height:100%;background:#4a7}
.chart rect.h,.legend .h{fill:#4a7;background:#4a7}
.chart rect.m,.legend .m{fill:#e94;background:#e94}
.chart rect.o,.legend .o{fill:#bbb;background:#bbb}.chart rect.t{fill:transparent}
.chart line{stroke:#999}.chart text{font-size:10px;fill:#666}
.legend i{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 1em}
table{border-collapse:collapse}td,th{padding:2px 12px 2px 0;text-align:left}
.cols{display:flex;flex-wrap:wrap;gap:3em}.c-open,.err,.r-failed{color:#b22}.c-closed{color:#282}
.c-half-open{color:#a70}.adm{display:none}body.admin .adm{display:inline-block}
#admin{border-top:1px solid #ddd;margin-top:2em;padding-top:.5em}#result{white-space:pre-wrap}
"""

_SCRIPT = """
(function(){
var KEY="pypi-proxy-admin-token";
function token(){return sessionStorage.getItem(KEY)}
function show(){document.body.classList.toggle("admin",!!token())}
function say(t){document.getElementById("result").textContent=t}
document.getElementById("token-form").addEventListener("submit",function(e){
  e.preventDefault();var f=document.getElementById("token");
  if(f.value){sessionStorage.setItem(KEY,f.value);f.value="";
    say("Admin token kept for this session.")}
  show()});
document.getElementById("token-forget").addEventListener("click",function(){
  sessionStorage.removeItem(KEY);show();say("Admin token forgotten.")});
document.addEventListener("click",function(e){
  var b=e.target.closest("button[data-path]");if(!b)return;
  var path=b.dataset.path;
  if(b.dataset.project!==undefined){
    var p=document.getElementById("project").value.trim();
    if(!p){say("Enter a project name first.");return}
    path=path.replace("{project}",encodeURIComponent(p))}
  if(b.dataset.confirm&&!confirm(b.dataset.confirm))return;
  say(b.dataset.method+" /"+path+" …");
  fetch(path,{method:b.dataset.method,headers:{"X-Admin-Token":token()||""}})
   .then(function(r){return r.text().then(function(t){
     say(b.dataset.method+" /"+path+": "+r.status+" "+t);refresh()})})
   .catch(function(err){say("failed: "+err)})});
function refresh(){
  fetch("?part=main",{cache:"no-store"}).then(function(r){if(r.ok)return r.text()})
   .then(function(t){if(t!==undefined)document.getElementById("main").innerHTML=t})
   .catch(function(){})}
show();setInterval(refresh,%d);
})();
"""


def render_page(
    data: dict[str, Any], now: float, base: str, refresh: float = REFRESH_SECONDS
) -> str:
    """The whole page: the refreshing main part (every ``refresh`` seconds), client set-up
    and the admin controls."""
    index = escape(base + "simple/")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>pypi-proxy status</title><style>{_STYLE}</style></head><body>"
        f"<h1>pypi-proxy {escape(str(data.get('version', '')))}</h1>"
        f"<p>Point pip at this mirror: <code>PIP_INDEX_URL={index} pip install ...</code><br>"
        f"or uv: <code>uv pip install --index-url {index} ...</code></p>"
        f'<div id="main">{render_main(data, now)}</div>'
        '<section id="admin"><h2>Admin</h2>'
        '<form id="token-form"><input id="token" type="password" autocomplete="off" '
        'placeholder="admin token" aria-label="admin token"> <button type="submit">'
        'Use token</button> <button type="button" id="token-forget" class="adm">Forget token'
        "</button></form>"
        '<p class="adm"><button data-method="POST" data-path="admin/prefetch">Start a prefetch '
        'pass</button> <button data-method="POST" data-path="admin/verify">Verify the cache'
        '</button></p><p class="adm"><input id="project" placeholder="project" '
        'aria-label="project"> <button data-method="POST" data-project '
        'data-path="admin/projects/{project}/refresh">Refresh its page</button> '
        '<button data-method="DELETE" data-project data-path="admin/projects/{project}" '
        'data-confirm="Forget this project?">Forget it</button></p>'
        '<p id="result" class="muted" role="status"></p></section>'
        "<p><a href='stats'>/stats</a> · <a href='metrics'>/metrics</a> · "
        "<a href='health'>/health</a> · <a href='simple/'>/simple/</a></p>"
        f"<script>{_SCRIPT % int(refresh * 1000)}</script></body></html>"
    )


async def status_page(request: Request) -> Response:
    data = await figures(request)
    now = time.time()
    headers = {"Cache-Control": "no-store"}
    if request.query_params.get("part") == "main":
        return HTMLResponse(render_main(data, now), headers=headers)
    refresh = _refresh(request.query_params.get("refresh"))
    return HTMLResponse(render_page(data, now, str(request.base_url), refresh), headers=headers)


def _refresh(value: str | None) -> float:
    """``?refresh=<seconds>`` (1 to 300) for a faster or calmer page."""
    try:
        seconds = float(value) if value is not None else REFRESH_SECONDS
    except ValueError:
        return REFRESH_SECONDS
    return min(max(seconds, 1.0), 300.0) if seconds == seconds else REFRESH_SECONDS
