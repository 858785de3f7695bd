"""Roundcube, Debian's webmail, against the lab as a student uses it (issue 14, part 3):
log in, sort by date and by sender (IMAP SORT, SORT=DISPLAY), the threads view
(THREAD=REFERENCES), read a message with an attachment, move one to a folder by dragging it,
delete one; every change is checked in another IMAP session too, and the lab's journal
must show the SORT and THREAD commands Roundcube sent.

One Roundcube (php -S) and one headless Chromium for the module; the tests run in order on
one mailbox, each on messages of its own. Screenshots of each step go to
/work/shared/screenshots/roundcube/ when that is writable, else /tmp/roundcube-shots/.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
from imapclient import IMAPClient

from tests.conftest import IN_CI, LabFactory, Server, need
from tests.imap import roundcube
from tests.imap.roundcube_browser import CHROMIUM, Browser, BrowserError

SHOTS = [Path("/work/shared/screenshots/roundcube"), Path("/tmp/roundcube-shots")]


@dataclass(frozen=True)
class Mail:
    sender: str        # display name: what Roundcube shows and SORT=DISPLAY sorts by
    address: str
    day: int           # Date: 2026-01-DAY
    subject: str
    message_id: str
    replies_to: tuple[str, ...] = ()  # References, oldest first


# Appended in this order: arrival, date and sender order all differ. Zed Quinn's address
# sorts first and his name last, so the sender order shows SORT=DISPLAY (RFC 5957) at work.
MAILS = [
    Mail("Carol Smith", "carol", 5, "Lunch on Friday", "lunch"),
    Mail("Bob Jones", "bob", 1, "Project kickoff", "kickoff"),
    Mail("Dave Brown", "dave", 2, "Re: Project kickoff", "reply1", ("kickoff",)),
    Mail("Eve Adams", "eve", 4, "Holiday photos", "photos"),
    Mail("Frank Miller", "frank", 3, "Re: Project kickoff", "reply2", ("kickoff", "reply1")),
    Mail("Zed Quinn", "aaron", 6, "Room booking", "room"),
]
ATTACHED = "Holiday photos"  # multipart/mixed: a text part and beach.png


def png() -> bytes:
    from PIL import Image  # a real image, so Roundcube shows it under the text

    out = io.BytesIO()
    Image.new("RGB", (120, 80), (30, 120, 200)).save(out, "PNG")
    return out.getvalue()


def build(mail: Mail) -> bytes:
    message = EmailMessage()
    message["From"] = f"{mail.sender} <{mail.address}@lab.test>"
    message["To"] = "Alice <alice@lab.test>"
    message["Subject"] = mail.subject
    message["Date"] = format_datetime(datetime(2026, 1, mail.day, 9, 0, tzinfo=UTC))
    message["Message-ID"] = f"<{mail.message_id}@lab.test>"
    if mail.replies_to:
        message["In-Reply-To"] = f"<{mail.replies_to[-1]}@lab.test>"
        message["References"] = " ".join(f"<{r}@lab.test>" for r in mail.replies_to)
    message.set_content(f"Hello Alice,\n\nthis is {mail.sender} about: {mail.subject}.\n")
    if mail.subject == ATTACHED:
        message.add_attachment(png(), maintype="image", subtype="png", filename="beach.png")
    return message.as_bytes()


def imap(server: Server) -> IMAPClient:
    """Another IMAP session, beside Roundcube's: the lab's state as any client sees it."""
    client = IMAPClient("127.0.0.1", server.port("imap", "imap"), ssl=False)
    client.login("alice", "alice")
    return client


def subjects(server: Server, folder: str) -> list[str]:
    with imap(server) as client:
        client.select_folder(folder, readonly=True)
        fetched = client.fetch(client.search("ALL"), ["ENVELOPE"])
        # Without ENVELOPE: a flag change Roundcube made meanwhile, told unasked (RFC 3501
        # 7.4.2), which IMAPClient files under the sequence number.
        return [data[b"ENVELOPE"].subject.decode() for _, data in sorted(fetched.items())
                if b"ENVELOPE" in data]


def shots_dir() -> Path:
    for place in SHOTS:
        try:
            place.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(place, os.W_OK):
            return place
    raise AssertionError(f"none of {SHOTS} is writable")


ROWS = """[...document.querySelectorAll('#messagelist tbody tr')]
    .filter(r => r.offsetParent !== null)
    .map(r => r.querySelector('.fromto').innerText.trim() + ' | '
              + r.querySelector('span.subject a').innerText.trim())"""
FRAME = "#messagecontframe"  # the preview pane: the message as Roundcube shows it


@dataclass
class Webmail:
    server: Server
    page: Browser
    rc: roundcube.Roundcube
    shots: Path

    def shot(self, name: str) -> None:
        self.page.screenshot(self.shots / f"{name}.png")

    def idle(self) -> None:
        """Until Roundcube has no request under way: its busy flag (while it is set,
        Roundcube drops the commands a click gives, app.js command()), no XHR open
        (jQuery's count) and the preview pane loaded."""
        self.page.wait("window.rcmail && rcmail.env.task == 'mail' && !rcmail.busy"
                       " && jQuery.active == 0 && (f => !f || f.contentDocument.readyState =="
                       " 'complete')(document.querySelector('#messagecontframe'))",
                       what="Roundcube idle")

    def click(self, selector: str, text: str | None = None) -> None:
        """A click once Roundcube listens again, as a person waits for the spinner."""
        self.idle()
        self.page.click(selector, text)

    def select(self, subject: str) -> None:
        """Click a message in the list, then wait until the preview pane shows it, as a
        person does. Roundcube loads the preview 60 ms after the click (400 ms after a
        quick second one: a timer that waits for a double click), and while it loads, it
        drops what a click asks (its busy flag): a Delete clicked in that window did
        nothing and the row never went (the flaky run; idle() cannot see a timer)."""
        self.click("#messagelist tbody tr span.subject a", subject)
        header = self.page.find("#message-header h2.subject", None, FRAME)
        self.page.wait(f"(h => h && h.innerText.trim().startsWith({json.dumps(subject)}))"
                       f"({header})", what=f"{subject!r} in the preview pane")
        self.idle()

    def rows(self) -> list[str]:
        """The message list as shown, row by row: 'sender | subject'."""
        return self.page.js(ROWS)

    def until_rows(self, expected: list[str]) -> None:
        """Until the list shows exactly these rows (it redraws after each answer)."""
        try:
            shown = json.dumps(expected, separators=(",", ":"))  # as JSON.stringify writes
            self.page.wait(f"JSON.stringify({ROWS}) == {json.dumps(shown)}",
                           what=f"the rows {expected}")
        except BrowserError:
            assert self.rows() == expected
        self.idle()

    def options(self, column: str, order: str, mode: str) -> None:
        """List options, as by hand: the Options button, each drop-down, Save."""
        page = self.page
        self.click("#messagelist-header a.options")
        for name, label in (("sort_col", column), ("sort_ord", order), ("mode", mode)):
            page.click(f".ui-dialog select[name={name}]")
            page.click(".select-menu li a", label)
        page.click(".ui-dialog button.mainaction", "Save")
        page.wait("!document.querySelector('.ui-dialog')", what="the dialog closed")
        self.idle()

    def folder(self, name: str) -> None:
        self.click("#mailboxlist li a", name)
        self.page.wait(f"rcmail.env.mailbox == {json.dumps(name.upper() if name == 'Inbox' else name)}"
                       " && !rcmail.busy", what=f"the folder {name}")

    def imap_commands(self, verb: str, expected: str) -> list[str]:
        """What Roundcube sent, as the lab's journal shows it: the commands with this verb,
        once the one `expected` is written (the lab writes its journal twice a second)."""
        journal = self.server.journal_until("imap", expected)
        return [line.split(" C: ", 1)[1] for line in journal.splitlines()
                if " C: " in line and f" {verb} " in line]


@pytest.fixture(scope="module")
def webmail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webmail]:
    reason = roundcube.missing() or (None if os.path.exists(CHROMIUM) else
                                     "needs Debian's chromium (tests/run installs it)")
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    need("php")
    root = tmp_path_factory.mktemp("roundcube")
    factory = LabFactory(root)
    server = factory.start(only="imap,smtp")
    with imap(server) as client:
        for n, mail in enumerate(MAILS):
            client.append("INBOX", build(mail), msg_time=datetime(2026, 2, 1, 8, n,
                                                                   tzinfo=UTC))
    rc = roundcube.Roundcube.start(root / "webmail", server.port("imap", "imap"),
                                   server.port("smtp", "submission"))
    try:
        with Browser(root / "chromium") as page:
            yield Webmail(server, page, rc, shots_dir())
    finally:
        rc.stop()
        problems = factory.cleanup()
        assert not problems, problems
    # Roundcube writes what went wrong between it and the server here (a NO or BAD it did
    # not expect, an answer it could not parse).
    assert not rc.log("errors"), rc.log("errors")


@pytest.fixture(autouse=True)
def shot_on_failure(request: pytest.FixtureRequest, webmail: Webmail) -> Iterator[None]:
    """What the page showed when a test failed, beside the steps' screenshots."""
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:
        webmail.shot(f"failed-{request.node.name}")


def row(mail: Mail) -> str:
    return f"{mail.sender} | {mail.subject}"


def by_subject(subject: str) -> Mail:
    return next(m for m in MAILS if m.subject == subject)


def test_log_in_and_see_the_inbox(webmail: Webmail) -> None:
    page = webmail.page
    page.open(webmail.rc.url)
    page.wait("document.querySelector('#rcmloginuser')", what="the login form")
    webmail.shot("01-login")
    page.type("#rcmloginuser", "alice")
    page.type("#rcmloginpwd", "alice")
    page.click("#rcmloginsubmit")
    webmail.idle()
    page.wait(f"document.querySelectorAll('#messagelist tbody tr').length == {len(MAILS)}",
              what="six messages in the list")
    webmail.idle()
    webmail.shot("02-inbox")
    assert sorted(webmail.rows()) == sorted(row(m) for m in MAILS)
    assert "alice@lab.test" in page.text("#layout-sidebar .header-title, .header-title")
    assert page.text("#mailboxlist a[rel=INBOX] .unreadcount") == str(len(MAILS))


def test_sort_by_date_then_by_sender(webmail: Webmail) -> None:
    webmail.options("Sent date", "descending", "List")
    newest_first = sorted(MAILS, key=lambda m: -m.day)
    webmail.until_rows([row(m) for m in newest_first])
    webmail.shot("03-sorted-by-date")
    webmail.options("From", "ascending", "List")
    # By the name shown, not the address: Zed Quinn <aaron@...> comes last (SORT=DISPLAY).
    by_name = sorted(MAILS, key=lambda m: m.sender)
    assert by_name[-1].address == "aaron"
    webmail.until_rows([row(m) for m in by_name])
    webmail.shot("04-sorted-by-sender")
    # Roundcube sorted on the server, and another client's SORT agrees with what it shows.
    sorts = webmail.imap_commands("SORT", "UID SORT (DISPLAYFROM) US-ASCII ALL")
    assert any(c.endswith("UID SORT (DATE) US-ASCII ALL") for c in sorts), sorts
    assert any(c.endswith("UID SORT (DISPLAYFROM) US-ASCII ALL") for c in sorts), sorts
    with imap(webmail.server) as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.sort(["DISPLAYFROM"])
        fetched = client.fetch(uids, ["ENVELOPE"])
    assert [fetched[u][b"ENVELOPE"].subject.decode() for u in uids] == \
        [m.subject for m in by_name]


def test_threads_view(webmail: Webmail) -> None:
    page = webmail.page
    webmail.options("Sent date", "descending", "Threads")
    roots = [m for m in sorted(MAILS, key=lambda m: -m.day) if not m.replies_to]
    webmail.until_rows([row(m) for m in roots])  # collapsed: one row per thread
    webmail.shot("05-threads-collapsed")
    webmail.click("#messagelist-header a.threads")
    webmail.click(".popover a.expand.all")
    kickoff = [by_subject("Project kickoff"), MAILS[2], MAILS[4]]  # Bob, Dave, Frank
    expanded = [row(m) for m in roots[:3]] + [row(m) for m in kickoff]
    webmail.until_rows(expanded)
    webmail.shot("06-threads-expanded")
    # Each reply drawn one step further in than the message it answers (References).
    steps = page.js("[...document.querySelectorAll('#messagelist tbody tr')]"
                    ".filter(r => r.offsetParent !== null).slice(-3)"
                    ".map(r => r.querySelector('.fromto').getBoundingClientRect().left)")
    assert steps[0] < steps[1] < steps[2], steps
    threads = webmail.imap_commands("THREAD", "UID THREAD REFERENCES US-ASCII ALL")
    assert any(c.endswith("UID THREAD REFERENCES US-ASCII ALL") for c in threads), threads
    with imap(webmail.server) as client:
        client.select_folder("INBOX", readonly=True)
        assert [list(t) for t in client.thread("REFERENCES")] == [[2, 3, 5], [4], [1], [6]]
    webmail.click("#messagelist-header a.threads")
    webmail.click(".popover a.expand.none")
    webmail.until_rows([row(m) for m in roots])


def test_read_a_message_with_an_attachment(webmail: Webmail) -> None:
    page = webmail.page
    webmail.select(ATTACHED)
    image = ("[...document.querySelector('#messagecontframe').contentDocument"
             ".querySelectorAll('img')].find(i => i.src.includes('_part=2'))")
    page.wait(f"(i => i && i.complete && i.naturalWidth)({image})",
              what="beach.png shown under the text")
    webmail.idle()
    webmail.shot("07-read-with-attachment")
    assert page.js(f"{image}.naturalWidth") == 120  # the PNG itself, through the lab
    assert page.text("#message-header h2.subject", frame=FRAME).strip().startswith(ATTACHED)
    assert "Eve Adams" in page.text("#message-header", frame=FRAME)
    assert "this is Eve Adams about: Holiday photos." in page.text("#messagebody", frame=FRAME)
    assert "beach.png" in page.text("#attachment-list", frame=FRAME)
    with imap(webmail.server) as client:  # reading it marked it read, for every client
        client.select_folder("INBOX", readonly=True)
        uid = client.search(["SUBJECT", ATTACHED])[0]
        assert b"\\Seen" in client.get_flags([uid])[uid]
    page.wait("document.querySelector('#mailboxlist a[rel=INBOX] .unreadcount')"
              ".innerText == '5'", what="5 unread")


def test_move_a_message_by_dragging_it_to_a_folder(webmail: Webmail) -> None:
    page = webmail.page
    lunch = by_subject("Lunch on Friday")
    page.drag("#messagelist tbody tr span.subject a", "#mailboxlist li a", lunch.subject,
              "Archive")
    page.wait(f"!({ROWS}).includes({json.dumps(row(lunch))})", what="the row gone")
    page.wait("(c => c && c.innerText == '1')(document.querySelector("
              "'#mailboxlist a[rel=Archive] .unreadcount'))", what="Archive with 1 unread")
    webmail.idle()
    webmail.shot("08-moved-to-archive")
    assert lunch.subject not in subjects(webmail.server, "INBOX")
    assert subjects(webmail.server, "Archive") == [lunch.subject]
    moves = webmail.imap_commands("MOVE", " Archive")
    assert any(c.endswith(" Archive") for c in moves), moves
    webmail.folder("Archive")
    webmail.until_rows([row(lunch)])
    webmail.shot("09-archive-folder")
    webmail.folder("Inbox")


def test_delete_to_trash_then_for_good(webmail: Webmail) -> None:
    page = webmail.page
    room = by_subject("Room booking")
    webmail.select(room.subject)
    webmail.click("#toolbar-menu a.delete")
    page.wait(f"!({ROWS}).includes({json.dumps(row(room))})", what="the row gone")
    webmail.idle()
    webmail.shot("10-deleted")
    assert room.subject not in subjects(webmail.server, "INBOX")
    assert subjects(webmail.server, "Trash") == [room.subject]
    webmail.folder("Trash")
    webmail.until_rows([row(room)])
    webmail.select(room.subject)
    webmail.click("#toolbar-menu a.delete")  # in Trash: gone for good (\Deleted, EXPUNGE)
    page.wait(f"({ROWS}).length == 0", what="an empty Trash")
    webmail.idle()
    webmail.shot("11-trash-emptied")
    assert subjects(webmail.server, "Trash") == []
    webmail.folder("Inbox")


def test_mail_from_another_client_shows_on_refresh(webmail: Webmail) -> None:
    late = Mail("Grace Hopper", "grace", 7, "Compiler notes", "compiler")
    with imap(webmail.server) as client:
        client.append("INBOX", build(late))
    webmail.click("#messagelist-header a.refresh")
    # Still threads, newest first: the new one on top, then what the tests above left.
    webmail.until_rows([row(late), row(by_subject(ATTACHED)), row(by_subject("Project kickoff"))])
    webmail.shot("12-new-mail-on-refresh")
    # Unread: six, less the one read, the one moved, the one deleted, plus the new one.
    assert webmail.page.text("#mailboxlist a[rel=INBOX] .unreadcount") == "4"
