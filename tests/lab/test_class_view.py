"""The teacher's live view and the student's (issue 16, part 3): scripted students with real
clients do some exercises; the grid (JSON, the page, its server-sent events) shows exactly
those; a student sees only their own row and their own sessions' ladder diagrams."""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import time

from services.http.classview import ladder_svg, rungs
from tests.conftest import need
from tests.lab.test_class import login_then_conditional_get, smtp_by_hand_then_pop3

ADMIN = ("admin", "admin")
ROSTER = "name,team,password\nstu1,team01,pw-one-1\nstu2,team01,pw-two-2\nstu3,team02,pw-three\n"


def get(server, path: str, auth: tuple[str, str] | None, source: str = "127.0.0.9"
        ) -> tuple[int, str]:
    """GET over a real socket from `source` (the viewers' own loopback addresses, so that
    their logins are not taken as the students' lab hosts)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port("http", "http"), timeout=30,
                                      source_address=(source, 0))
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    return response.status, body


def progress(server) -> dict[str, set[str]]:
    status, body = get(server, "/api/v1/class/progress", ADMIN)
    assert status == 200, body
    return {s["name"]: set(s["done"]) for s in json.loads(body)["students"]}


def curl(address: str, *args: str) -> str:
    done = subprocess.run(["curl", "-sS", "--interface", address, *args], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_ladder_has_a_rung_per_command_reply_tls_and_transfer():
    events = [{"ts": 100.0 + n, "kind": kind, "text": text} for n, (kind, text) in enumerate([
        ("open", "ftp"), ("command", "USER stu1"), ("reply", "331 Password required"),
        ("event", "tls TLSv1.3 started"), ("event", "transfer STOR a.txt 5120 bytes"),
        ("event", "transfer RETR a.txt 5120 bytes"), ("packet", "udp www.lab.test A -> NOERROR"),
        ("close", "")])]
    kinds = [(r.kind, round(r.at)) for r in rungs(events)]
    assert kinds == [("note", 0), ("c>s", 1), ("s>c", 2), ("tls", 3), ("bytes>", 4),
                     ("bytes<", 5), ("c>s", 6), ("s>c", 6), ("note", 7)]
    svg = ladder_svg([*events, {"ts": 108.0, "kind": "command", "text": "<script>"}],
                     "10.0.0.7:4000", "ftp")
    assert svg.count("<line") == 2 + 7 and "&lt;script&gt;" in svg and "<script>" not in svg
    # a handshake's band says what the journal's fields say, the key log before the names
    handshake = {"ts": 100.0, "kind": "event", "text": "tls handshake TLSv1.3 ...", "fields": {
        "version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "sni": "www.team07.lab.test",
        "alpn": "http/1.1", "keylog": True}}
    band = rungs([handshake])[0]
    assert band.kind == "tls" and band.text == ("TLSv1.3 TLS_AES_256_GCM_SHA384 · key logged · "
                                                "SNI www.team07.lab.test · ALPN http/1.1")
    assert band.text in ladder_svg([handshake], "10.0.0.7:4000", "http")  # whole, not cut
    unlogged = {**handshake, "fields": {**handshake["fields"], "keylog": False, "alpn": ""}}
    assert rungs([unlogged])[0].text.endswith("· no key log · SNI www.team07.lab.test")


def test_the_grid_shows_exactly_what_each_student_did_and_only_to_them(lab, tmp_path):
    need("curl", "nc", "dig")
    server = lab.start(only="http,smtp,pop3,imap,dns")
    roster = tmp_path / "roster.csv"
    roster.write_text(ROSTER)
    assert server.cli("class", "import", str(roster)).returncode == 0
    assert progress(server) == {"stu1": set(), "stu2": set(), "stu3": set()}
    # the teacher's live stream is open before anybody does anything
    stream = http.client.HTTPConnection("127.0.0.1", server.port("http", "http"), timeout=30,
                                        source_address=("127.0.0.9", 0))
    stream.request("GET", "/lab/class/events", headers={
        "Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()})
    events = stream.getresponse()
    assert events.status == 200 and events.getheader("Content-Type").startswith(
        "text/event-stream")

    def next_grid() -> dict:
        data = ""
        while True:
            line = events.readline().decode()
            assert line, "the stream ended"
            if line.startswith("data: "):
                data = line[6:]
            elif line == "\n" and data:
                return json.loads(data)

    first = next_grid()
    assert all(not s["done"] for s in first["progress"]["students"])
    # stu1 (from 127.0.0.2): logs in once (which makes 127.0.0.2 their lab host), then a
    # conditional GET and its 304 with no login
    http_url = f"http://127.0.0.1:{server.port('http', 'http')}"
    login_then_conditional_get(curl, "127.0.0.2", "stu1:pw-one-1", http_url)
    # stu2 (from 127.0.0.3): SMTP by hand with nc, then reading it over POP3 and IMAP
    smtp_by_hand_then_pop3(server, curl)
    curl("127.0.0.3", "-f", "-u", "stu2:pw-two-2",
         f"imap://127.0.0.1:{server.port('imap', 'imap')}/INBOX;UID=1")
    # the grid shows exactly those once the journal has them (flushed twice a second)
    want = {"stu1": {"http-conditional-get"}, "stu2": {"smtp-by-hand", "mail-pop3-and-imap"},
            "stu3": set()}
    deadline = time.monotonic() + 15
    while progress(server) != want and time.monotonic() < deadline:
        time.sleep(0.1)
    assert progress(server) == want
    # ...and the live stream pushed it, without a reload
    pushed = next_grid()
    for _ in range(20):  # a push per change, each student's exercises as they came
        if {s["name"]: set(s["done"]) for s in pushed["progress"]["students"]} == want:
            break
        pushed = next_grid()
    assert pushed["version"] > first["version"] and "/lab/class/session/" in pushed["html"]
    stream.close()
    grid = json.loads(get(server, "/api/v1/class/progress", ADMIN)[1])
    row = {s["name"]: s for s in grid["students"]}
    smtp_session = row["stu2"]["done"]["smtp-by-hand"][0]
    http_session = row["stu1"]["done"]["http-conditional-get"][0]
    # the teacher sees every session's ladder
    status, page = get(server, f"/lab/class/session/{smtp_session}", ADMIN)
    assert status == 200 and "<svg" in page and "MAIL FROM:&lt;stu2@lab.test&gt;" in page
    assert "250 2.0.0" in page
    # a student: their own row, their own sessions, nobody else's
    status, page = get(server, "/lab/class", ("stu1", "pw-one-1"))
    assert status == 200 and "stu1" in page and "stu2" not in page
    assert get(server, f"/lab/class/session/{http_session}", ("stu1", "pw-one-1"))[0] == 200
    status, page = get(server, f"/lab/class/session/{smtp_session}", ("stu1", "pw-one-1"))
    assert status == 404 and "MAIL FROM" not in page
    assert get(server, "/api/v1/class/progress", ("stu1", "pw-one-1"))[0] == 403
    assert get(server, "/api/v1/class/progress/stu2", ("stu1", "pw-one-1"))[0] == 403
    status, body = get(server, "/api/v1/class/progress/stu1", ("stu1", "pw-one-1"))
    assert status == 200 and [s["name"] for s in json.loads(body)["students"]] == ["stu1"]
    assert get(server, "/lab/class", ("alice", "alice"))[0] == 403  # a lab user, no student
    assert get(server, "/lab/class", None)[0] == 401
    # the grid's JSON is in the OpenAPI document
    paths = json.loads(get(server, "/api/v1/openapi.json", None)[1])["paths"]
    assert "/class/progress" in paths and "/class/progress/{user}" in paths


def test_a_student_who_did_nothing_has_nothing_even_after_looking(lab, tmp_path):
    who = "stu3"
    server = lab.start(only="http")
    roster = tmp_path / "roster.csv"
    roster.write_text(ROSTER)
    assert server.cli("class", "import", str(roster)).returncode == 0
    status, page = get(server, "/lab/class", (who, "pw-three"), source="127.0.0.5")
    assert status == 200 and "0 / " in page
    assert progress(server)[who] == set()


def test_the_grid_keeps_a_bounded_window_and_what_was_earned_before_it(tmp_path, monkeypatch):
    """Over a long class the view holds at most MAX_EVENTS journal events; an exercise done
    before the window moved on stays done."""
    from services import config as config_module
    from services.http import classview
    from services.lab import Lab

    monkeypatch.setattr(classview, "MAX_EVENTS", 100)
    monkeypatch.setattr(classview, "EVERY", 0.0)
    lab = Lab(config_module.default(), tmp_path / "data")
    try:
        lab.store.roster.put("stu1", "", "pw")
        room = classview.Classroom(lab)
        day = tmp_path / "data" / "journal" / "2026-12-02.jsonl"
        day.parent.mkdir(parents=True, exist_ok=True)

        def write(events: list[dict]) -> None:
            with open(day, "a") as handle:
                handle.writelines(json.dumps(e) + "\n" for e in events)

        write([{"ts": 1.0, "service": "http", "session": "s1", "peer": "10.0.0.7:1",
                "user": "stu1", "kind": "reply", "text": "304 0 bytes"}])
        assert room.current().row("stu1") == {"http-conditional-get": ["s1"]}
        write([{"ts": 2.0 + n, "service": "dns", "session": "-", "peer": "10.0.0.8:53",
                "user": "", "kind": "packet", "text": "udp x.lab.test A -> NXDOMAIN"}
               for n in range(500)])
        grid = room.current()
        assert len(room.events) == 100 and room.session("s1") == []
        assert grid.row("stu1") == {"http-conditional-get": ["s1"]}
        # a line still being written waits for its end
        with open(day, "a") as handle:
            handle.write('{"ts": 9.0, "service": "http"')
        room.current()
        assert room.events[-1]["service"] == "dns"
    finally:
        lab.store.close()
