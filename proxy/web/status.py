"""The status page at /: for a person, rendered here from the /stats figures (no front-end
build). It refreshes its main part every few seconds (``?part=main``, rendered by the same
function) and, once the admin token is entered (kept in sessionStorage, sent as
X-Admin-Token so that Authorization stays free for client authentication), shows buttons for
the admin actions.

``render_page`` and ``render_main`` (proxy.web.statusparts) are pure: figures and a clock in,
HTML out. Times are shown as dates and ages, sizes with units, never epoch floats or raw byte
counts (proxy.web.statusformat).
"""

from __future__ import annotations

import time
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from proxy.web.ops import figures
from proxy.web.statusparts import render_main

REFRESH_SECONDS = 5


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
