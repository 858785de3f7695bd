"""/lab/dashboard: live sessions (from the journal), DHCP leases and mailbox counts, for
the lab's administrator; the page reloads itself every few seconds."""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING, Any

from ..journal import recent
from .auth import challenge, login
from .responses import error_page, send
from .style import html_page

if TYPE_CHECKING:
    from ..lab import Lab
    from .site import Router

REFRESH_SECONDS = 5
WINDOW_SECONDS = 3600  # sessions opened longer ago than this are not looked for
RECENT_EVENTS = 40


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


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def render(lab: Lab, request: Any) -> bytes:
    lab.journal.flush()  # this process's own newest events
    now = time.time()
    events = recent(lab.store, since=now - WINDOW_SECONDS, limit=5000)
    mine = request.channel.session.id  # the dashboard's own connection is not news
    sessions = [s for s in live_sessions(events) if s["last"]["session"] != mine]
    session_rows = [[s["service"], s["peer"], s["user"] or "-", _clock(s["opened"]),
                     f"{s['last']['kind']}: {s['last']['text'][:80]}"] for s in sessions]
    lease_rows = [[x.ip, x.mac, x.hostname or "-", x.state,
                   f"{max(0, int(x.expires - now))} s"] for x in lab.store.net.leases()]
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
<h2 id="sessions">Live sessions ({len(sessions)})</h2>
{_table(["service", "peer", "user", "opened", "last event"], session_rows, "no open sessions")}
<h2 id="leases">DHCP leases ({len(lease_rows)})</h2>
{_table(["address", "MAC", "host name", "state", "expires in"], lease_rows, "no leases")}
<h2 id="mail">Mailboxes</h2>
{_table(["user", "mailbox", "messages", "unseen", "bytes"], mail_rows, "no users")}
<h2 id="events">Recent events</h2>
{_table(["time", "service", "peer", "user", "kind", "text"], event_rows, "nothing yet")}"""
    page = html_page("protolab dashboard", body,
                     f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">')
    request.setHeader(b"Cache-Control", b"no-store")
    # Journal texts are what clients sent, decoded by each protocol: a lone surrogate
    # (undecodable bytes kept by surrogateescape) must not make the whole page fail.
    return send(request, page.encode("utf-8", "replace"))


def register(router: Router, lab: Lab) -> None:
    def dashboard(request: Any) -> Any:
        who = login(lab, request, admin_ok=True)
        if who is None:
            return challenge(request, "protolab administrator",
                             "The dashboard is for the lab's administrator: give the name and "
                             "password of [api] admin_user (admin/admin in the default lab).")
        if who != lab.config.api.admin_user:
            return error_page(request, 403, "The dashboard is for the lab's administrator.")
        return render(lab, request)

    router.page("/lab/dashboard", dashboard)
