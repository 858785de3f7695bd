"""`protolab class`: a roster in, students out, and the difference on a second import
(issue 16, part 1). The roster's logic without I/O, then the command against a running lab
whose services see the students at once."""

from __future__ import annotations

import csv
import imaplib
import io
import os
import re
import subprocess

import pytest

from services.classroom.exercises import ExerciseError, catalogue, evaluate, load
from services.classroom.roster import (
    ALPHABET,
    GENERATED_BITS,
    RosterError,
    Student,
    parse,
    plan,
    render,
)
from services.classroom.sheet import render as render_sheet
from services.store import Store
from services.store.users import ITERATIONS, RANDOM_BITS, RANDOM_ITERATIONS
from tests.conftest import IN_CI, need
from tests.ftputil import ftp_login
from tests.http.test_capture import CHROMIUM


def test_parse_takes_a_header_blank_lines_and_comments_and_lowercases():
    text = "Name,Team,Password\n\n# a comment\nAlice,Team07,\nbob,,pw\ncarol\n"
    assert parse(text) == [Student("alice", "team07", ""), Student("bob", "", "pw"),
                           Student("carol", "", "")]


@pytest.mark.parametrize("text, error", [
    ("alice,team07\nalice,team08\n", "roster:2: alice is in the roster twice"),
    ("x y\n", "roster:1: 'x y' is not a valid user name"),
    ("public\n", "not a valid user name"),
    ("alice,team 7\n", "roster:1: team 'team 7' must be one DNS label"),
    ("alice,a,b,c\n", "roster:1: 4 columns"),
])
def test_parse_names_the_bad_line(text, error):
    with pytest.raises(RosterError, match=re.escape(error)):
        parse(text)


def test_plan_adds_moves_and_removes_only_the_difference():
    now = [Student("alice", "t1", "pa"), Student("bob", "t1", "pb"), Student("carol", "", "pc")]
    wanted = [Student("alice", "t1"), Student("bob", "t2"), Student("dave", "t2")]
    todo = plan(now, wanted, {"alice", "bob", "carol", "admin"})
    assert todo.add == [Student("dave", "t2")]
    assert todo.move == [Student("bob", "t2", "pb")]  # keeps the password it had
    assert todo.remove == ["carol"]
    assert plan(now, now, {"alice", "bob", "carol"}).empty()
    with pytest.raises(RosterError, match="admin is already a lab user not made by a roster"):
        plan(now, [Student("admin")], {"admin"})
    with pytest.raises(RosterError, match="team 'bob' is also a user's name"):
        plan(now, [Student("alice", "bob"), Student("bob")], {"alice", "bob"})


def test_render_is_read_back_by_parse():
    students = [Student("bob", "t2", "pb"), Student("alice", "t1", "pa")]
    assert sorted(parse(render(students)), key=lambda s: s.name) == sorted(students, key=lambda s: s.name)


def exported(server) -> dict[str, tuple[str, str]]:
    out = server.cli("class", "export")
    assert out.returncode == 0, out.stderr
    return {row["name"]: (row["team"], row["password"]) for row in csv.DictReader(io.StringIO(out.stdout))}


def test_import_makes_students_every_service_sees_and_a_second_import_the_difference(lab, tmp_path):
    server = lab.start(only="imap,ftp")
    roster = tmp_path / "roster.csv"
    roster.write_text("name,team,password\nstu1,team01,\nstu2,team01,given-pw\nstu3,,\n")
    done = server.cli("class", "import", str(roster))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("added 3, changed 0, removed 0 (3 students); slips: ")
    students = exported(server)
    assert students["stu2"] == ("team01", "given-pw")
    generated = students["stu1"][1]
    assert len(generated) == 13 and set(generated) <= set(ALPHABET)
    # generated passwords (65 random bits) get the cheaper rounds, the teacher's the full
    assert GENERATED_BITS >= RANDOM_BITS
    store = Store(server.data)
    try:
        rounds = {name: int(store.db.one("SELECT pw_hash FROM users WHERE name = ?",
                                         (name,))[0].split("$")[1]) for name in students}
    finally:
        store.close()
    assert rounds == {"stu1": RANDOM_ITERATIONS, "stu2": ITERATIONS, "stu3": RANDOM_ITERATIONS}
    # the running lab's services know them at once, with the generated password
    with imaplib.IMAP4("127.0.0.1", server.port("imap", "imap")) as client:
        client.login("stu1", generated)
    ftp_login(server, "stu3", students["stu3"][1]).quit()
    # the slips: one per student, with the password, the address and the CA's fingerprint
    sheet = (server.data / "class" / "sheet.html")
    assert sheet.stat().st_mode & 0o077 == 0  # passwords: the teacher's eyes only
    page = sheet.read_text()
    assert page.count('class="slip"') == 3 and generated in page and "stu1@lab.test" in page
    assert re.search(r"lab CA SHA-256: ([0-9A-F]{2}:){31}[0-9A-F]{2}", page)
    # again, changed: stu3 leaves, stu2 changes team, stu4 comes; stu1 keeps its password
    roster.write_text("stu1,team01\nstu2,team02\nstu4,team02\n")
    again = server.cli("class", "import", str(roster))
    assert again.stdout.startswith("added 1, changed 1, removed 1 (3 students)"), again.stderr
    after = exported(server)
    assert set(after) == {"stu1", "stu2", "stu4"} and after["stu1"] == students["stu1"]
    assert after["stu2"] == ("team02", "given-pw")
    assert "stu3" not in server.cli("user", "list").stdout
    with imaplib.IMAP4("127.0.0.1", server.port("imap", "imap")) as client, \
            pytest.raises(imaplib.IMAP4.error):
        client.login("stu3", students["stu3"][1])
    # the lab's own users are never the roster's to take or remove
    roster.write_text("alice\n")
    refused = server.cli("class", "import", str(roster))
    assert refused.returncode == 1 and "alice is already a lab user" in refused.stderr
    assert set(exported(server)) == {"stu1", "stu2", "stu4"}


@pytest.mark.skipif(not os.path.exists(CHROMIUM) and not IN_CI,
                    reason="needs Debian's chromium (tests/run installs it)")
def test_the_sheet_prints_eight_whole_slips_a_page_in_headless_chromium(tmp_path):
    """Printed (to PDF, as a browser's print dialogue does): A4, eight slips a page, none
    cut by a page break, without the page's heading and note."""
    need("chromium", "pdftotext")
    students = [Student(f"student{n:02d}", f"team{n % 3}", f"pw{n:02d}Xk7mQ9") for n in range(11)]
    sheet = tmp_path / "sheet.html"
    sheet.write_text(render_sheet(students, "lab.test", {"lab DNS": "10.0.0.1"}, "AB:" * 31 + "AB"))
    pdf = tmp_path / "sheet.pdf"
    printed = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                              "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                              "--no-pdf-header-footer", f"--print-to-pdf={pdf}", sheet.as_uri()],
                             capture_output=True, text=True, timeout=120)
    assert pdf.exists(), printed.stderr[-2000:]
    pages = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                           text=True, timeout=60, check=True).stdout.split("\f")
    pages = [page for page in pages if page.strip()]
    assert len(pages) == 2
    for page, count in zip(pages, (8, 3), strict=True):
        assert page.count("user name") == count and page.count("lab CA SHA-256") == count
        assert page.count("password") == count and "Lab accounts" not in page
    for student in students:  # each slip whole: its name and password on one page
        assert sum(student.name in page and student.password in page for page in pages) == 1


# --- exercises checked from the journal ----------------------------------------------------

def event(session: str, peer: str, user: str, service: str, kind: str, text: str) -> dict:
    return {"session": session, "peer": peer, "user": user, "service": service, "kind": kind,
            "text": text}


def test_every_shipped_exercise_loads_and_has_instructions():
    exercises = catalogue()
    assert len(exercises) >= 9
    assert all(e.title and len(e.instructions) > 40 and e.checks for e in exercises)


@pytest.mark.parametrize("text, error", [
    ('instructions = "x"', "t.toml: title: a non-empty string is needed"),
    ('title = "t"', "t.toml: no [[check]]"),
    ('title = "t"\n[[check]]\nsteps = [{kind = "reply"}]', "check 1: every step needs a service"),
    ('title = "t"\n[[check]]\nsteps = [{service = "http", kind = "shout"}]', "kind 'shout' is not"),
    ('title = "t"\n[[check]]\nsteps = [{service = "http", text = "("}]', "check 1: text: "),
    ('title = "t"\n[[check]]\nsteps = [{service = "http", colour = 1}]', "unknown keys colour"),
    ('title = "t"\n[[check]]\nsteps = [{service = []}]', "check 1: every step needs a service"),
    ('title = "t"\n[[check]]\nsteps = [{service = "http", fields = 1}]', "check 1: fields: a table"),
    ('title = "t"\n[[check]]\nsteps = [{service = "http", fields = {sni = "("}}]', "check 1: fields: "),
    ('title = ', "t.toml: "),
])
def test_a_bad_exercise_file_is_one_line_naming_it(tmp_path, text, error):
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(ExerciseError, match=re.escape(error)):
        load(path)


def test_events_are_the_students_by_login_then_by_their_address():
    http = "http-conditional-get"
    events = [
        event("s1", "10.0.0.7:4000", "", "http", "open", "http"),
        event("s1", "10.0.0.7:4000", "", "http", "reply", "304 0 bytes"),  # before any login
        event("s2", "10.0.0.7:4001", "stu1", "pop3", "auth", "PLAIN stu1 ok"),
        event("s3", "10.0.0.8:4000", "", "http", "reply", "304 0 bytes"),  # nobody's address
        event("-", "10.0.0.9:5353", "", "dns", "packet", "udp www.lab.test A -> NOERROR"),
    ]
    progress = evaluate(catalogue(), events, {"stu1", "stu2", "stu3"}, {"10.0.0.9": "stu3"})
    assert progress.sessions("stu1", http) == ["s1"]  # the address stu1 logged in from
    assert progress.done["stu2"] == {}  # nothing of theirs
    assert "dns-records" not in progress.done["stu3"]  # an A query alone is a quarter of it
    events += [event("-", "10.0.0.9:5354", "", "dns", "packet", f"{p} -> NOERROR")
               for p in ("udp lab.test MX", "udp 9.0.0.10.in-addr.arpa PTR", "tcp lab.test AXFR")]
    progress = evaluate(catalogue(), events, {"stu1", "stu2", "stu3"}, {"10.0.0.9": "stu3"})
    assert progress.sessions("stu3", "dns-records")  # by its DHCP lease's host name


def test_steps_of_a_check_must_come_in_order_in_one_session():
    smtp = [event("a", "10.0.0.7:1", "stu1", "smtp", "open", "smtp")] + [
        event("a", "10.0.0.7:1", "stu1", "smtp", kind, text) for kind, text in (
            ("command", "EHLO pc"), ("command", "MAIL FROM:<stu1@lab.test>"),
            ("command", "RCPT TO:<stu1@lab.test>"), ("command", "DATA"),
            ("event", "bare-lf 3 lines of the message end in LF alone"),
            ("event", "delivered 30 bytes from <stu1@lab.test> to stu1 uid 1"))]
    assert evaluate(catalogue(), smtp, {"stu1"}).sessions("stu1", "smtp-by-hand") == ["a"]
    by_program = [e for e in smtp if not e["text"].startswith("bare-lf")]  # CR LF: swaks
    assert evaluate(catalogue(), by_program, {"stu1"}).done["stu1"].get("smtp-by-hand") is None
    shuffled = [smtp[0], smtp[6], *smtp[1:6]]  # delivered before the commands: not it
    assert evaluate(catalogue(), shuffled, {"stu1"}).done["stu1"].get("smtp-by-hand") is None
    on_587 = [{**e, "text": "submission"} if e["kind"] == "open" else e for e in smtp]
    assert evaluate(catalogue(), on_587, {"stu1"}).done["stu1"].get("smtp-by-hand") is None


def test_grades_show_exactly_what_each_student_did_with_real_clients(lab, tmp_path):
    need("curl", "nc", "dig")
    server = lab.start(only="http,smtp,pop3,imap,dns")
    roster = tmp_path / "roster.csv"
    roster.write_text("stu1,,pw-one-1\nstu2,,pw-two-2\nstu3,,pw-three\n")
    assert server.cli("class", "import", str(roster)).returncode == 0
    http = f"http://127.0.0.1:{server.port('http', 'http')}"

    def curl(address: str, *args: str) -> str:
        done = subprocess.run(["curl", "-sS", "--interface", address, *args], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    # stu1 (127.0.0.2): logs in to the web space, then a conditional GET, and DNS questions
    login_then_conditional_get(curl, "127.0.0.2", "stu1:pw-one-1", http)
    dns = ["dig", "-b", "127.0.0.2", "@127.0.0.1", "-p", str(server.port("dns", "dns"))]
    for question in (["www.lab.test", "A"], ["lab.test", "MX"], ["-x", "127.0.0.1"],
                     ["lab.test", "AXFR"]):
        assert subprocess.run([*dns, *question], capture_output=True, timeout=30).returncode == 0
    # stu2 (127.0.0.3): SMTP typed by hand (bare LF, as nc sends it), then POP3 and IMAP
    smtp_by_hand_then_pop3(server, curl)
    curl("127.0.0.3", "-f", "-u", "stu2:pw-two-2",
         f"imap://127.0.0.1:{server.port('imap', 'imap')}/INBOX;UID=1")
    server.journal_until("imap", "stu2 ")  # flushed twice a second
    grades = server.cli("class", "grades", "--csv")
    assert grades.returncode == 0, grades.stderr
    rows = {row["student"]: row for row in csv.DictReader(io.StringIO(grades.stdout))}
    done = {name: {k for k, v in row.items() if v == "1"} for name, row in rows.items()}
    assert done == {"stu1": {"http-conditional-get", "dns-records"},
                    "stu2": {"smtp-by-hand", "mail-pop3-and-imap"}, "stu3": set()}
    table = server.cli("class", "grades").stdout
    assert "stu3" in table and "HTTP: a conditional GET and its 304" in table


def test_a_dhcp_lease_and_release_and_a_trace_are_the_student_the_lease_named():
    """The DHCP service journals each datagram as a session from the client's address
    (0.0.0.0 before it has one); the ACK's note names the host, and that makes the address
    the student's: the release from it, and the DNS questions asked from it."""
    mac = "52:54:00:12:34:56"
    events = [
        event("d1", "0.0.0.0:68", "", "dhcp", "packet", f"DISCOVER from {mac}"),
        event("d1", "0.0.0.0:68", "", "dhcp", "event", "dhcp offered 10.9.0.100"),
        event("d2", "0.0.0.0:68", "", "dhcp", "event",
              f"dhcp bound 10.9.0.100 to {mac} as stu1"),
        *({**event("-", f"10.9.0.100:{5000 + n}", "", "dns", "packet", text), "fields": {"view": view}}
          for n, (text, view) in enumerate((("udp . NS -> NOERROR", "root"),
                                            ("udp www.lab.test A -> NOERROR", "root"),
                                            ("udp www.lab.test A -> NOERROR", "tld"),
                                            ("udp www.lab.test A -> NOERROR", "lab")))),
        event("d3", "10.9.0.100:68", "", "dhcp", "event", "dhcp released 10.9.0.100"),
        event("d4", "0.0.0.0:68", "", "dhcp", "event", "dhcp bound 10.9.0.101 to 52:54:00:00:00:01 as pc7"),
    ]
    progress = evaluate(catalogue(), events, {"stu1", "stu2"})  # no lease left in the store
    assert progress.sessions("stu1", "dhcp-lease-release") == ["d2", "d3"]
    assert progress.sessions("stu1", "dns-trace") == ["@10.9.0.100"]
    assert progress.done["stu2"] == {}
    plain = [e for e in events if e["text"] != "udp . NS -> NOERROR"]  # a plain dig
    assert "dns-trace" not in evaluate(catalogue(), plain, {"stu1"}).done["stu1"]
    # ". NS" and then the name from the lab's own server: not down from the root
    direct = [e for e in events if e.get("fields", {}).get("view") not in ("root", "tld")]
    assert "dns-trace" not in evaluate(catalogue(), direct, {"stu1"}).done["stu1"]


def login_then_conditional_get(curl, address: str, login: str, http: str) -> None:
    """A student from `address`: a PUT to their web space as `login` (which makes the
    address theirs), then a GET of /ca.crt and its conditional repeat, answered 304."""
    user = login.split(":")[0]
    curl(address, "-f", "-u", login, "-T", "-", f"{http}/~{user}/x.txt")
    etag = next(line.split(":", 1)[1].strip() for line in
                curl(address, "-I", http + "/ca.crt").splitlines()
                if line.lower().startswith("etag:"))
    assert "304" in curl(address, "-o", "/dev/null", "-w", "%{http_code}",
                         "-H", f"If-None-Match: {etag}", http + "/ca.crt")


def smtp_by_hand_then_pop3(server, curl) -> None:
    """stu2 from 127.0.0.3: a message typed to port 25 with nc (bare LF line ends, the
    exercise's tell), then read back over POP3."""
    typed = ("EHLO pc\nMAIL FROM:<stu2@lab.test>\nRCPT TO:<stu2@lab.test>\nDATA\n"
             "Subject: by hand\n\ntyped\n.\nQUIT\n")
    sent = subprocess.run(["nc", "-q", "5", "-s", "127.0.0.3", "127.0.0.1",
                           str(server.port("smtp", "smtp"))], input=typed, capture_output=True,
                          text=True, timeout=30)
    assert "250 2.0.0" in sent.stdout, sent.stdout
    curl("127.0.0.3", "-f", "-u", "stu2:pw-two-2", f"pop3://127.0.0.1:{server.port('pop3', 'pop3')}/1")
