"""The status page's main part, the one that refreshes itself, rendered from the /stats
figures: pure, figures and a clock in, HTML out."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from proxy.web.statusformat import (
    NONE,
    bar,
    date,
    duration,
    figure,
    percent,
    size,
    table,
    when,
)


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


def _cache(data: dict[str, Any]) -> str:
    used = data["cache"]["bytes"]
    cap = data.get("max_cache_size")
    if isinstance(cap, int) and cap > 0:
        note = f"of {escape(size(cap))} ({used / cap * 100:.0f}%) {bar(used / cap)}"
    else:
        note = "no size cap"
    files = f"{data['cache']['files']} files, {data['cache']['projects']} projects"
    return figure("in the cache", escape(size(used)), f"{note}<br>{escape(files)}", "cache")


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
    breakers = table(
        ["origin", "breaker", "failures in a row", "times opened", "errors"],
        rows,
        "No upstream requests yet.",
    )
    return (
        f"<p>Upstream <code>{escape(str(data.get('upstream', '')))}</code>: "
        f"{data['upstream_errors']} failed fetches in all.</p>{breakers}"
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
                lines.append(f" {bar(held / (held + queue))} {held / (held + queue):.0%}")
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
    return table(["project", "requests", ""], rows, "No project asked yet.")


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
            figure(
                "hit ratio",
                escape(percent(data.get("hit_ratio"))),
                f"{data['hits']} hits, {data['misses']} misses; last hour {hour_ratio}",
                "hit-ratio",
            ),
            figure(
                "requests",
                str(data["requests"]),
                f"{hour_requests} in the last hour; {data['not_found']} not found",
                "requests",
            ),
            figure(
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
