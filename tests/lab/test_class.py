"""`protolab class`: a roster in, students out, and the difference on a second import
(issue 16, part 1). The roster's logic without I/O, then the command against a running lab
whose services see the students at once."""

from __future__ import annotations

import csv
import imaplib
import io
import re

import pytest

from services.classroom.roster import ALPHABET, RosterError, Student, parse, plan, render
from tests.ftputil import ftp_login


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
    assert len(generated) == 10 and set(generated) <= set(ALPHABET)
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
