"""The class's live view: a grid of students by exercises for the teacher (the [api]
administrator), each student's own row for them, and each session of the evidence drawn
as a ladder diagram (Wireshark's flow graph, from the server's side).

    /lab/class                    the grid (a student sees only their own row)
    /lab/class/events             the grid again each time it changes (server-sent events)
    /lab/class/session/ID         one session as a ladder diagram (a student: theirs only)
    GET /api/v1/class/progress    the same grid as JSON (api.py's classroom block)

The grid is the classroom's evaluation (services.classroom.exercises) over the journal
files, read incrementally as they grow (every process of the lab appends to them), at most
MAX_EVENTS of the newest kept: what was earned stays earned when its events leave the
window. It is worked out again only while somebody watches (a viewer, an API call).
"""

from __future__ import annotations

import html
import json
import os
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet import task
from twisted.web.server import NOT_DONE_YET

from ..classroom.exercises import Exercise, ExerciseError, catalogue, evaluate, owners
from .auth import challenge, login
from .responses import error_page, send
from .style import html_page

if TYPE_CHECKING:
    from ..lab import Lab
    from .site import Router

MAX_EVENTS = 50_000  # ~20 MB, ~0.3 s to evaluate (tests/bench/classroom.py); older
# evidence is kept as earned
TICK = 0.25  # seconds between looks at the journal while somebody watches
EVERY = 0.5  # seconds between two evaluations at most: a busy class costs a bounded share
KEEPALIVE = 15.0  # an SSE comment this often, so proxies and idle timers keep the stream
LADDER_ROWS = 400  # a longer session is cut (its first rows), said on the page


@dataclass
class Grid:
    exercises: list[Exercise]
    students: list[tuple[str, str]]  # (name, team), by team then name
    done: dict[str, dict[str, list[str]]]  # student -> exercise -> session keys
    whose: dict[str, str] = field(default_factory=dict)  # session key -> student

    def row(self, name: str) -> dict[str, list[str]]:
        return self.done.get(name, {})

    def as_json(self, only: str | None = None) -> dict[str, Any]:
        return {
            "exercises": [{"id": e.id, "title": e.title} for e in self.exercises],
            "students": [{"name": name, "team": team, "done": self.row(name)}
                         for name, team in self.students if only in (None, name)],
        }


@dataclass(eq=False)
class Viewer:
    """One open event stream: whose row it shows (None: all), the grid version it has."""
    request: Any
    only: str | None
    version: int = -1


class Classroom:
    """The grid of one lab, kept up to date from its journal files."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.directory = lab.data / "journal"
        self.offsets: dict[Path, int] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.earned: dict[str, dict[str, list[str]]] = {}
        self.grid: Grid | None = None
        self.version = 0
        self.error = ""  # a teacher's exercise file that cannot be used
        self.viewers: list[Viewer] = []
        self.loop = task.LoopingCall(self._tick)
        self._roster: list[tuple[str, str, str]] = []
        self._keepalive = 0.0
        self._stale = True  # events or roster changed since the last evaluation
        self._evaluated = 0.0

    # --- reading and evaluating

    def _read_new(self) -> bool:
        """Append the journal lines written since the last look; whether there were any."""
        grew = False
        paths = sorted(self.directory.glob("*.jsonl"))
        for gone in set(self.offsets) - set(paths):  # pruned (the journal's keep_days)
            del self.offsets[gone]
        for path in paths:
            start = self.offsets.get(path, 0)
            try:
                if os.stat(path).st_size <= start:
                    continue
                with open(path, "rb") as handle:
                    handle.seek(start)
                    data = handle.read()
            except OSError:
                continue
            whole = data.rfind(b"\n") + 1  # a line still being written waits
            self.offsets[path] = start + whole
            for line in data[:whole].splitlines():
                try:
                    self.events.append(json.loads(line))
                    grew = True
                except ValueError:
                    continue
        return grew

    def refresh(self) -> bool:
        """Bring the grid up to date; whether it changed."""
        self.lab.journal.flush_quietly()  # this process's newest events
        roster = self.lab.store.roster.members()
        self._stale |= self._read_new() or roster != self._roster or self.grid is None
        if not self._stale or (time.monotonic() - self._evaluated < EVERY and self.grid):
            return False
        self._stale, self._evaluated, self._roster = False, time.monotonic(), roster
        try:
            exercises = catalogue(self.lab.data / "exercises")
            self.error = ""
        except ExerciseError as error:
            exercises, self.error = catalogue(), str(error)
        names = {name for name, _, _ in roster}
        events = list(self.events)
        leases = {x.ip: x.hostname for x in self.lab.store.net.leases() if x.hostname}
        progress = evaluate(exercises, events, names, leases)
        for name in names:
            mine = self.earned.setdefault(name, {})
            for exercise, sessions in progress.done.get(name, {}).items():
                mine.setdefault(exercise, sessions)  # the first evidence stays
        for name in set(self.earned) - names:
            del self.earned[name]  # left the roster
        grid = Grid(exercises, [(name, team) for name, team, _ in roster],
                    {name: dict(self.earned.get(name, {})) for name in names},
                    owners(events, names, leases))
        changed = self.grid is None or grid.done != self.grid.done or \
            grid.students != self.grid.students
        self.grid = grid
        if changed:
            self.version += 1
        return changed

    def current(self) -> Grid:
        self.refresh()
        assert self.grid is not None  # refresh always makes one
        return self.grid

    def session(self, key: str) -> list[dict[str, Any]]:
        """The events of one session (or, for "@ADDRESS", that address's sessionless
        packets), oldest first."""
        if key.startswith("@"):
            address = key[1:]
            return [e for e in self.events if e.get("session") in ("", "-")
                    and _host(e.get("peer", "")) == address]
        return [e for e in self.events if e.get("session") == key]

    # --- the live stream

    def watch(self, request: Any, only: str | None) -> None:
        entry = Viewer(request, only)
        self.viewers.append(entry)
        self._push(entry)
        if not self.loop.running:
            self.loop.start(TICK, now=False)

        def gone(_: Any) -> None:
            if entry in self.viewers:
                self.viewers.remove(entry)
            if not self.viewers and self.loop.running:
                self.loop.stop()

        request.notifyFinish().addBoth(gone)

    def _tick(self) -> None:
        try:
            self.refresh()
        except Exception:  # a bad line or a store hiccup: try again at the next tick
            return
        now = time.monotonic()
        for viewer in list(self.viewers):
            if viewer.version != self.version:  # a page or an API call may have refreshed
                self._push(viewer)
            elif now - self._keepalive > KEEPALIVE:
                viewer.request.write(b": keepalive\n\n")
        if now - self._keepalive > KEEPALIVE:
            self._keepalive = now

    def _push(self, viewer: Viewer) -> None:
        grid = self.current()
        viewer.version = self.version
        body = json.dumps({"version": self.version, "html": grid_table(grid, viewer.only),
                           "progress": grid.as_json(viewer.only)})
        viewer.request.write(b"event: grid\ndata: " + body.encode("utf-8", "replace") + b"\n\n")


_rooms: weakref.WeakKeyDictionary[Any, Classroom] = weakref.WeakKeyDictionary()


def classroom(lab: Lab) -> Classroom:
    """The lab's one Classroom (the API and the pages share it)."""
    if lab not in _rooms:
        _rooms[lab] = Classroom(lab)
    return _rooms[lab]


def _host(peer: str) -> str:
    host, _, port = peer.rpartition(":")
    return (host if port.isdigit() else peer).strip("[]")


# --- pages ---------------------------------------------------------------------------------

GRID_STYLE = """
.grid td.done{background:#d7f5d7;text-align:center}.grid td.todo{background:#fafafa}
.grid td.done a{color:#060;text-decoration:none;font-weight:bold;display:block}
.grid{width:auto}.grid th.ex{writing-mode:vertical-rl;transform:rotate(180deg);
white-space:nowrap;font-weight:normal;font-size:.85em;padding:.5em .3em;text-align:left}
.grid tr.sum td{background:#eef;text-align:center;font-size:.85em}
.grid td.name{white-space:nowrap;font-weight:bold}.grid td.team{color:#555}
.grid td.count{text-align:right;white-space:nowrap}.grid td.done,.grid td.todo{min-width:1.6em}
details pre{white-space:pre-wrap;margin:.3em 0 .8em}
.grid td,.grid th{padding:.25em .4em}.live{color:#070}.stale{color:#a00}
"""

GRID_SCRIPT = """
<script>
const status = document.getElementById('live');
const source = new EventSource('/lab/class/events');
source.addEventListener('grid', (message) => {
  document.getElementById('grid').innerHTML = JSON.parse(message.data).html;
  status.textContent = 'live, updated ' + new Date().toLocaleTimeString();
  status.className = 'live';
});
source.onerror = () => { status.textContent = 'reconnecting...'; status.className = 'stale'; };
</script>
"""


def grid_table(grid: Grid, only: str | None = None) -> str:
    """The grid as an HTML table: students (with their team) by exercises, a tick linking
    to the session that shows it."""
    e = html.escape
    students = [(name, team) for name, team in grid.students if only in (None, name)]
    if not students:
        return "<p><i>No students yet: protolab class import ROSTER.csv</i></p>"
    teams = any(team for _, team in students)
    head = ("<tr><th>student</th>" + ("<th>team</th>" if teams else "")
            + "".join(f'<th class="ex" title="{e(x.title)}">{n}. {e(_short(x.title, 30))}</th>'
                      for n, x in enumerate(grid.exercises, 1)) + "<th>done</th></tr>")
    rows = []
    for name, team in students:
        cells = []
        mine = grid.row(name)
        for exercise in grid.exercises:
            sessions = mine.get(exercise.id)
            if sessions:
                links = "".join(f'<a href="/lab/class/session/{e(key)}" '
                                f'title="{e(exercise.title)}: session {e(key)}">&#10003;</a>'
                                for key in sessions[:1])
                cells.append(f'<td class="done">{links}</td>')
            else:
                cells.append('<td class="todo"></td>')
        team_cell = f'<td class="team">{e(team) or "-"}</td>' if teams else ""
        rows.append(f'<tr><td class="name">{e(name)}</td>{team_cell}{"".join(cells)}'
                    f'<td class="count">{len(mine)} / {len(grid.exercises)}</td></tr>')
    if only is None:  # the teacher's line: how many have done each
        counts = "".join(f"<td>{sum(bool(grid.row(name).get(x.id)) for name, _ in students)}</td>"
                         for x in grid.exercises)
        rows.append(f'<tr class="sum"><td class="name">done by</td>'
                    f'{"<td></td>" if teams else ""}{counts}<td></td></tr>')
    return f'<table class="grid">{head}{"".join(rows)}</table>'


def _short(title: str, width: int = 34) -> str:
    return title if len(title) <= width else title[:width - 1] + "\u2026"


def grid_page(lab: Lab, room: Classroom, only: str | None) -> bytes:
    grid = room.current()
    e = html.escape
    legend = "".join(f"<li><details><summary><b>{e(x.title)}</b> <code>{e(x.id)}</code>"
                     f"</summary><pre>{e(x.instructions)}</pre></details></li>"
                     for x in grid.exercises)
    whom = "your progress" if only else f"{len(grid.students)} students"
    warning = f'<p class="stale">{e(room.error)}</p>' if room.error else ""
    body = (f"<h1>The class &mdash; {e(lab.config.lab.domain)}</h1>"
            f'<p>{e(whom)}, {len(grid.exercises)} exercises, checked from the journal. '
            f'<span id="live">as of {time.strftime("%H:%M:%S")}</span></p>{warning}'
            f'<div id="grid">{grid_table(grid, only)}</div>'
            "<p>A tick links to the session that shows it, drawn as a ladder diagram.</p>"
            f"<h2>Exercises</h2><p>Open one for what to do, what to look for in Wireshark "
            f"and the questions to answer.</p><ol>{legend}</ol>{GRID_SCRIPT}")
    return html_page("protolab class", body, f"<style>{GRID_STYLE}</style>").encode(
        "utf-8", "replace")


# --- the ladder diagram --------------------------------------------------------------------

LEFT, RIGHT, WIDTH, ROW, TOP = 230, 830, 1060, 30, 70
TO_SERVER = ("STOR", "APPE", "STOU", "PUT", "POST", "write", "APPEND", "uploaded")


@dataclass(frozen=True)
class Rung:
    at: float  # seconds since the first event
    kind: str  # "c>s", "s>c", "note", "tls", "bytes>", "bytes<"
    text: str


def rungs(events: list[dict[str, Any]]) -> list[Rung]:
    """What each journal event is on the ladder: a command from the client, a reply from
    the server, TLS starting, a transfer's bytes (its direction), or a note at the server."""
    if not events:
        return []
    start = events[0]["ts"]
    out = []
    for event in events:
        kind, text = event.get("kind", ""), event.get("text", "")
        at = event["ts"] - start
        if kind == "command":
            out.append(Rung(at, "c>s", text))
        elif kind == "reply":
            out.append(Rung(at, "s>c", text))
        elif kind == "packet":  # DNS, DHCP: "udp NAME TYPE -> RCODE"
            question, arrow, answer = text.partition(" -> ")
            out.append(Rung(at, "c>s", question))
            if arrow:
                out.append(Rung(at, "s>c", answer))
        elif kind == "event" and text.split(" ", 1)[0] in ("tls", "starttls", "handshake"):
            out.append(Rung(at, "tls", _handshake(event.get("fields") or {}) or text))
        elif kind == "event" and text.startswith("transfer"):
            upward = any(word in text for word in TO_SERVER)
            out.append(Rung(at, "bytes>" if upward else "bytes<", text))
        elif kind == "open":
            out.append(Rung(at, "note", f"connection opened{' on ' + text if text else ''}"))
        elif kind == "close":
            out.append(Rung(at, "note", f"closed{' (' + text + ')' if text else ''}"))
        else:
            out.append(Rung(at, "note", f"{kind}: {text}" if kind != "event" else text))
    return out


def _handshake(fields: dict[str, Any]) -> str:
    """A TLS handshake's band, from its journal fields (services/tls.py): what it agreed,
    whether its secrets are in the key log first (the band has room for about 80
    characters), then the names the client sent. "" for another TLS event."""
    if "version" not in fields:
        return ""
    parts = [f"{fields['version']} {fields.get('cipher', '')}".strip(),
             "key logged" if fields.get("keylog") else "no key log"]
    parts += [f"{name} {fields[key]}" for name, key in (("SNI", "sni"), ("ALPN", "alpn"))
              if fields.get(key)]
    return " · ".join(parts)


def ladder_svg(events: list[dict[str, Any]], client: str, server: str) -> str:
    """The session as SVG: client and server columns, each rung a labelled arrow (or a
    note at the server, or a TLS band across) with its time since the session began."""
    e = html.escape
    items = rungs(events)[:LADDER_ROWS]
    height = TOP + ROW * len(items) + 30
    middle = (LEFT + RIGHT) // 2
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="monospace" font-size="13">',
        # userSpaceOnUse: one arrowhead size whatever the line's width (a transfer's is thick)
        '<defs><marker id="a" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="11" '
        'markerHeight="11" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
        '<path d="M0,0L10,5L0,10z" '
        'fill="context-stroke"/></marker></defs>',
        f'<text x="{LEFT}" y="24" text-anchor="middle" font-weight="bold" '
        f'font-family="sans-serif" font-size="15">client</text>',
        f'<text x="{LEFT}" y="42" text-anchor="middle">{e(client)}</text>',
        f'<text x="{RIGHT}" y="24" text-anchor="middle" font-weight="bold" '
        f'font-family="sans-serif" font-size="15">server</text>',
        f'<text x="{RIGHT}" y="42" text-anchor="middle">{e(server)}</text>',
        f'<line x1="{LEFT}" y1="50" x2="{LEFT}" y2="{height - 10}" stroke="#444" '
        'stroke-width="2"/>',
        f'<line x1="{RIGHT}" y1="50" x2="{RIGHT}" y2="{height - 10}" stroke="#444" '
        'stroke-width="2"/>',
    ]
    for number, rung in enumerate(items):
        y = TOP + ROW * number + 16
        parts.append(f'<text x="8" y="{y + 4}" fill="#666">+{rung.at:8.3f} s</text>')
        label = e(_short(rung.text, 70))
        if rung.kind in ("c>s", "s>c", "bytes>", "bytes<"):
            right = rung.kind in ("c>s", "bytes>")
            colour = {"c>s": "#1f5fbf", "s>c": "#1a7f37"}.get(rung.kind, "#b35900")
            width = 4 if rung.kind.startswith("bytes") else 1.6
            x1, x2 = (LEFT, RIGHT) if right else (RIGHT, LEFT)
            parts.append(f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{colour}" '
                         f'stroke-width="{width}" marker-end="url(#a)"/>')
            parts.append(f'<text x="{middle}" y="{y - 5}" text-anchor="middle" '
                         f'fill="{colour}">{label}</text>')
        elif rung.kind == "tls":  # the band's colour says TLS (an emoji lock is a box
            # where the browser has no emoji font, as on a plain Debian)
            parts.append(f'<rect x="{LEFT}" y="{y - 14}" width="{RIGHT - LEFT}" height="22" '
                         f'fill="#fff3c4" stroke="#c9a200"><title>{e(rung.text)}</title></rect>')
            parts.append(f'<text x="{middle}" y="{y + 2}" text-anchor="middle" font-size="12" '
                         f'font-weight="bold">{e(_short(rung.text, 82))}</text>')
        else:  # a note of the server's, between the columns (beside them it would be cut)
            parts.append(f'<circle cx="{RIGHT}" cy="{y}" r="4" fill="#777"/>')
            parts.append(f'<text x="{middle}" y="{y + 4}" text-anchor="middle" fill="#666" '
                         f'font-style="italic">{label}</text>')
    parts.append("</svg>")
    return "".join(parts)


def ladder_page(lab: Lab, key: str, events: list[dict[str, Any]], owner: str) -> bytes:
    e = html.escape
    first = events[0]
    service = first.get("service", "?")
    opened = next((x.get("text", "") for x in events if x.get("kind") == "open"), "")
    client = first.get("peer", "?")
    server = f"{service} ({opened})" if opened else service
    cut = (f"<p>The first {LADDER_ROWS} of {len(events)} events are drawn.</p>"
           if len(rungs(events)) > LADDER_ROWS else "")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(first["ts"]))
    body = (f"<h1>Session {e(key)}</h1>"
            f"<p>{e(service)} &middot; {e(owner or 'nobody known')} &middot; from "
            f"{e(client)} &middot; began {e(when)} &middot; {len(events)} journal events. "
            '<a href="/lab/class">back to the class</a></p>'
            '<p><span style="color:#1f5fbf">&rarr; client to server</span> &middot; '
            '<span style="color:#1a7f37">&larr; server to client</span> &middot; '
            '<span style="color:#b35900">&rArr; bytes of a transfer</span> &middot; '
            "grey: what the server noted</p>"
            f"{cut}{ladder_svg(events, client, server)}")
    return html_page(f"session {e(key)}", body).encode("utf-8", "replace")


# --- access --------------------------------------------------------------------------------

def _viewer(lab: Lab, request: Any) -> tuple[str | None, bytes | None]:
    """(whose row the viewer may see: None for the teacher, or the student's name), or
    the answer that refuses them."""
    who = login(lab, request, admin_ok=True)
    if who is None:
        return None, challenge(request, "protolab class",
                               "The class view: the lab administrator sees the whole class, "
                               "a student (their lab user) their own progress.")
    if who == lab.config.api.admin_user:
        return None, None
    if who not in {name for name, _, _ in lab.store.roster.members()}:
        return None, error_page(request, 403, f"{who} is not in the class roster.")
    return who, None


def register(router: Router, lab: Lab) -> None:
    room = classroom(lab)

    def page(request: Any) -> Any:
        only, refused = _viewer(lab, request)
        if refused is not None:
            return refused
        request.setHeader(b"Cache-Control", b"no-store")
        return send(request, grid_page(lab, room, only))

    def events(request: Any) -> Any:
        only, refused = _viewer(lab, request)
        if refused is not None:
            return refused
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        if request.method == b"HEAD":
            return b""
        room.watch(request, only)
        return NOT_DONE_YET

    def session(request: Any) -> Any:
        only, refused = _viewer(lab, request)
        if refused is not None:
            return refused
        key = request.path.decode("utf-8", "replace").rsplit("/", 1)[-1]
        grid = room.current()
        owner = grid.whose.get(key, "")
        if only is not None and owner != only:
            # the same answer for another's session and for none: nothing to learn from it
            return error_page(request, 404, f"No session {key} of yours.")
        found = room.session(key)
        if not found:
            return error_page(request, 404, f"No session {key} in the journal's window.")
        request.setHeader(b"Cache-Control", b"no-store")
        return send(request, ladder_page(lab, key, found, owner))

    router.page("/lab/class", page)
    router.page("/lab/class/events", events)
    router.tree("/lab/class/session/", session)


def api_progress(lab: Lab, only: str | None = None) -> dict[str, Any]:
    """GET /api/v1/class/progress (and .../{user}): the grid as JSON."""
    return classroom(lab).current().as_json(only)

