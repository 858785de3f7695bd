"""/lab/dashboard: live sessions (from the journal), DHCP leases and mailbox counts, for
the lab's administrator; the page reloads itself every few seconds (not while the teacher
is filling in a form). Its fault buttons post to /lab/dashboard/faults, and each student's
capture downloads from /lab/dashboard/capture (the API's export, behind the same login)."""

from __future__ import annotations

import html
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from .. import capture, faults, scenarios
from ..journal import recent
from . import api
from .auth import challenge, cross_site, login
from .responses import error_page, send
from .style import html_page

if TYPE_CHECKING:
    from ..lab import Lab
    from .site import Router

REFRESH_SECONDS = 5
WINDOW_SECONDS = 3600  # sessions opened longer ago than this are not looked for
RECENT_EVENTS = 40
MAX_FORM = 4096  # bytes of a fault button's form


def live_sessions(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sessions with an "open" and no "close" among `events` (oldest first)."""
    sessions: dict[str, dict[str, Any]] = {}
    for event in events:
        key = event["session"]
        if event["kind"] == "open":
            sessions[key] = {"service": event["service"], "peer": event["peer"],
                             "user": event["user"], "opened": event["ts"], "last": event}
        elif key in sessions:
            if event["kind"] == "close":
                del sessions[key]
                continue
            sessions[key]["last"] = event
            sessions[key]["user"] = event["user"] or sessions[key]["user"]
    return sorted(sessions.values(), key=lambda s: s["opened"])


def recent_rows(events: list[dict[str, Any]]) -> list[list[Any]]:
    """The newest RECENT_EVENTS rows, newest first. A run of DNS events in a row (a
    browser's own lookups, a dig loop) is one row that counts them, so that a class's
    SMTP, IMAP and FTP sessions stay in view."""
    rows: list[list[Any]] = []
    run: list[dict[str, Any]] = []

    def end_run() -> None:
        if len(run) == 1:
            rows.append(_row(run[0]))
        elif run:
            peers = sorted({e["peer"].rsplit(":", 1)[0] for e in run})
            names = list(dict.fromkeys(e["text"][:40] for e in run))
            shown = "; ".join(names[:3]) + (f"; ... ({len(names)} different)" if len(names) > 3 else "")
            rows.append([f"{_clock(run[0]['ts'])}-{_clock(run[-1]['ts'])}", "dns",
                         ", ".join(peers[:3]) + (" ..." if len(peers) > 3 else ""), "-",
                         f"{len(run)} events", shown[:100]])
        run.clear()

    for event in events:
        if event["service"] == "dns":
            run.append(event)
            continue
        end_run()
        rows.append(_row(event))
    end_run()
    return rows[-RECENT_EVENTS:][::-1]


def _row(event: dict[str, Any]) -> list[Any]:
    return [_clock(event["ts"]), event["service"], event["peer"], event["user"] or "-",
            event["kind"], event["text"][:100]]


def _table(headings: list[str], rows: list[list[Any]], empty: str) -> str:
    if not rows:
        return f"<p><i>{html.escape(empty)}</i></p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell_form(action: str, fields: dict[str, str], label: str) -> str:
    hidden = "".join(f'<input type="hidden" name="{name}" value="{html.escape(value)}">'
                     for name, value in fields.items())
    return (f'<form method="post" action="/lab/dashboard/faults" class="inline">'
            f'<input type="hidden" name="action" value="{action}">{hidden}'
            f"<button>{html.escape(label)}</button></form>")


def faults_section(lab: Lab, now: float) -> str:
    """The faults that are on (each with its off button), a form to switch one on, and the
    scenarios with their symptoms and start/stop buttons."""
    active = lab.store.faults.active(now)
    rows = "".join(
        f"<tr><td>#{f.id}</td><td><code>{html.escape(f.kind)}</code></td>"
        f"<td>{html.escape(f.target or 'everyone')}</td>"
        f"<td>{'until cleared' if f.until is None else f'{max(0, int(f.until - now))} s'}</td>"
        f"<td>{html.escape(f.scenario or '-')}</td>"
        f"<td>{_cell_form('clear', {'id': str(f.id)}, 'switch off')}</td></tr>" for f in active)
    table = (f"<table><tr><th>#</th><th>kind</th><th>for</th><th>left</th><th>scenario</th>"
             f"<th></th></tr>{rows}</table>{_cell_form('clear', {}, 'switch every fault off')}"
             if active else "<p><i>no faults: the lab works as it should</i></p>")
    options = "".join(f'<option value="{html.escape(k)}" title="{html.escape(v)}">{html.escape(k)}</option>'
                      for k, v in sorted(faults.kinds().items()))
    add = (f'<form method="post" action="/lab/dashboard/faults" style="margin:1em 0">'
           f'<input type="hidden" name="action" value="add"><b>Switch one on:</b> '
           f'<label>kind <select name="kind">{options}</select></label> '
           f'<label>for <input name="target" placeholder="everyone, or a user / address / name" '
           f'size="30"></label> <label>during <input name="for" placeholder="10m" size="6"></label> '
           f"<button>switch on</button> <small>(<code>protolab fault kinds</code> says what "
           f"each does)</small></form>")
    running = {f.scenario for f in active if f.scenario}
    items = []
    for name, scenario in scenarios.catalogue(lab.data / "scenarios").items():
        if isinstance(scenario, faults.FaultError):
            items.append(f"<li><b>{html.escape(name)}</b>: <span class=down>cannot be used: "
                         f"{html.escape(str(scenario))}</span></li>")
            continue
        button = (_cell_form("stop", {"scenario": name}, "stop") if name in running else
                  _cell_form("start", {"scenario": name}, "start"))
        kinds = ", ".join(p.kind for p in scenario.faults)
        items.append(f"<li><b>{html.escape(scenario.title)}</b> ({html.escape(name)}: "
                     f"<code>{html.escape(kinds)}</code>) {button}"
                     f"<details><summary>symptoms and solution</summary><p>"
                     f"{html.escape(scenario.symptoms)}</p><p><i>{html.escape(scenario.solution)}"
                     f"</i></p></details></li>")
    return (f'<h2 id="faults">Faults ({len(active)} on)</h2>{table}{add}'
            f'<h3>Scenarios</h3><ul>{"".join(items)}</ul>')


def captures_section(lab: Lab) -> str:
    """The capture that runs (protolab capture start) and a download per student."""
    running = capture.running(lab.data)
    try:
        source = capture.latest(lab.data).name
    except capture.CaptureError:
        return ('<h2 id="captures">Captures</h2><p><i>no capture yet: <code>protolab capture '
                'start</code> on the lab machine records one</i></p>')
    state = (f"capturing on {html.escape(running.interface)} since {_clock(running.started)}"
             if running else "not capturing now")
    links = " ".join(f'<a href="/lab/dashboard/capture?client={html.escape(u.name)}">'
                     f"{html.escape(u.name)}</a>" for u in lab.store.users.list())
    return (f'<h2 id="captures">Captures</h2><p>{state}; downloads cut <code>{html.escape(source)}'
            f"</code> to one student's sessions, their TLS secrets inside (Wireshark opens them "
            f"decrypted).</p><p>{links}</p>"
            f'<form method="get" action="/lab/dashboard/capture"><label>or one client address '
            f'<input name="client" placeholder="10.203.0.101" size="16"></label> '
            f"<button>download</button></form>")


def change_faults(lab: Lab, form: dict[str, str]) -> str:
    """Do what a fault button asked; returns "" or the one-line error to show."""
    action = form.get("action", "")
    try:
        if action == "add":
            faults.switch_on(lab.store, form.get("kind", ""), form.get("target", ""),
                             form.get("for", ""))
        elif action == "clear":
            lab.store.faults.clear(int(form["id"]) if form.get("id") else None)
        elif action == "start":
            scenario = scenarios.find(lab.data / "scenarios", form.get("scenario", ""))
            scenarios.start(lab.store, scenario)
        elif action == "stop":
            lab.store.faults.clear(scenario=form.get("scenario", ""))
        else:
            return f"no such action {action!r}"
    except (faults.FaultError, ValueError) as error:
        return str(error)
    return ""


# Reload every few seconds to stay live, but not while the teacher types in a form (a
# meta refresh would throw what they typed away); without scripts, the meta refresh does.
RELOAD = (f'<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS}"></noscript>'
          f"<script>setInterval(function(){{var a=document.activeElement;"
          f"if(!a||!/^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName))location.reload()}},"
          f"{REFRESH_SECONDS * 1000})</script>"
          "<style>form.inline{display:inline;margin:0}</style>")


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def render(lab: Lab, request: Any, problem: str = "") -> bytes:
    lab.journal.flush()  # this process's own newest events
    now = time.time()
    events = recent(lab.store, since=now - WINDOW_SECONDS, limit=5000)
    mine = request.channel.session.id  # the dashboard's own connection is not news
    sessions = [s for s in live_sessions(events) if s["last"]["session"] != mine]
    session_rows = [[s["service"], s["peer"], s["user"] or "-", _clock(s["opened"]),
                     f"{s['last']['kind']}: {s['last']['text'][:80]}"] for s in sessions]
    lease_rows = [[x.ip, x.mac, x.hostname or "-", x.state,
                   f"{max(0, int(x.expires - now))} s"] for x in lab.store.net.leases()] + [
                  [x.ip, f"DUID {x.duid[:24]}{'...' if len(x.duid) > 24 else ''} IAID {x.iaid}",
                   x.hostname or "-", x.state, f"{max(0, int(x.expires - now))} s"]
                  for x in lab.store.net.leases6()]
    mail_rows = []
    for user in lab.store.users.list():
        for box in lab.store.mail.mailboxes(user.name):
            status = lab.store.mail.status(box.id)
            if status.messages or box.name == "INBOX":
                mail_rows.append([user.name, box.name, status.messages, status.unseen,
                                  status.size])
    event_rows = recent_rows([e for e in events if e["session"] != mine])
    body = f"""<h1>protolab dashboard &mdash; {html.escape(lab.config.lab.domain)}</h1>
<p>As of {_clock(now)}; this page reloads every {REFRESH_SECONDS} s.</p>
<p><a href="/lab/class">The class: who did which exercise (live)</a></p>
{f'<p class=down>{html.escape(problem)}</p>' if problem else ''}
<h2 id="sessions">Live sessions ({len(sessions)})</h2>
{_table(["service", "peer", "user", "opened", "last event"], session_rows, "no open sessions")}
<h2 id="leases">DHCP leases ({len(lease_rows)})</h2>
{_table(["address", "MAC (DHCPv6: DUID)", "host name", "state", "expires in"], lease_rows, "no leases")}
<h2 id="mail">Mailboxes</h2>
{_table(["user", "mailbox", "messages", "unseen", "bytes"], mail_rows, "no users")}
{faults_section(lab, now)}
{captures_section(lab)}
<h2 id="events">Recent events</h2>
{_table(["time", "service", "peer", "user", "kind", "text"], event_rows, "nothing yet")}"""
    page = html_page("protolab dashboard", body, RELOAD)
    request.setHeader(b"Cache-Control", b"no-store")
    # Journal texts are what clients sent, decoded by each protocol: a lone surrogate
    # (undecodable bytes kept by surrogateescape) must not make the whole page fail.
    return send(request, page.encode("utf-8", "replace"))


def register(router: Router, lab: Lab) -> None:
    exporter = api.Api(lab)
    export = next(r for r in api.ROUTES if r.pattern == "/captures/export")

    def admin(request: Any) -> bytes | None:
        """None for the administrator, else the page that says why not."""
        who = login(lab, request, admin_ok=True)
        if who is None:
            return challenge(request, "protolab administrator",
                             "The dashboard is for the lab's administrator: give the name and "
                             "password of [api] admin_user (admin/admin in the default lab).")
        if who != lab.config.api.admin_user:
            return error_page(request, 403, "The dashboard is for the lab's administrator.")
        return None

    def dashboard(request: Any) -> Any:
        return admin(request) or render(lab, request)

    def change(request: Any) -> Any:
        if request.method != b"POST":
            return error_page(request, 405, "The fault buttons post here.", {b"Allow": b"POST"})
        if cross_site(request):
            return error_page(request, 403, "A page of another site may not change the lab.")
        denied = admin(request)
        if denied is not None:
            return denied
        body = request.content.read(MAX_FORM + 1) if request.content is not None else b""
        if len(body) > MAX_FORM:
            return error_page(request, 413, f"A fault button's form is under {MAX_FORM} bytes.")
        try:
            form = {k: v[0] for k, v in urllib.parse.parse_qs(
                body.decode("utf-8", "replace"), max_num_fields=20).items()}
        except ValueError:  # more fields than any button sends
            return error_page(request, 400, "That is not a fault button's form.")
        problem = change_faults(lab, form)
        if problem:
            return render(lab, request, problem)
        request.setResponseCode(303)
        request.setHeader(b"Location", b"/lab/dashboard#faults")
        return b""

    def download(request: Any) -> Any:
        return admin(request) or exporter.run(api.Call(lab, request, {}), export)

    router.page("/lab/dashboard", dashboard)
    router.page("/lab/dashboard/faults", change)
    router.page("/lab/dashboard/capture", download)
