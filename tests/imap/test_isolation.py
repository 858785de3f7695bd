"""IMAP isolation: alice reaches nothing of bob's by any mailbox name spelling, and never
sees his mailboxes listed."""

from __future__ import annotations

import pytest

from tests.imap.test_dialogue import Raw

SECRET = b"Subject: bob's secret\r\n\r\nthe password is swordfish\r\n"
NAMES = ['"../bob/INBOX"', "../bob/INBOX", '"/bob/INBOX"', '"bob/INBOX"', '"~bob/INBOX"',
         '"#bob/INBOX"', '"#shared/bob/INBOX"', '"#user/bob/INBOX"', '"Other Users/bob/INBOX"',
         '"..%2fbob%2fINBOX"', '"INBOX/../../bob/INBOX"', '"bob"', '"../bob"', '"%"', '"*"',
         '"../*"', '"/"', '"."', '".."', '"&AC4ALg-/bob/INBOX"', '"Bob/INBOX"',
         '"\\\\bob\\\\INBOX"', '"bob@lab.test/INBOX"', '"BobSecret"', '"../bob/BobSecret"']
COMMANDS = ["SELECT {}", "EXAMINE {}", "STATUS {} (MESSAGES UIDNEXT)", "DELETE {}",
            "RENAME {} Stolen", "SUBSCRIBE {}", "APPEND {} {{3+}}\r\nabc"]


@pytest.fixture(scope="module")
def imap_pair(tmp_path_factory):
    from tests.conftest import LabFactory

    factory = LabFactory(tmp_path_factory.mktemp("isolation"))
    server = factory.start(only="imap")
    port = server.port("imap", "imap")
    bob = Raw(port)
    assert bob.cmd("LOGIN bob bob")[-1].startswith(b"t OK")
    assert bob.cmd("CREATE BobSecret")[-1].startswith(b"t OK")
    for box in ("INBOX", "BobSecret"):
        assert bob.cmd(b"APPEND %s {%d+}\r\n" % (box.encode(), len(SECRET)) + SECRET)[-1] \
            .startswith(b"t OK")
    alice = Raw(port)
    assert alice.cmd("LOGIN alice alice")[-1].startswith(b"t OK")
    yield server, alice, bob
    assert not factory.cleanup()


def _bob_unchanged(bob: Raw) -> None:
    for box in (b"INBOX", b"BobSecret"):
        status = bob.cmd(b"STATUS %s (MESSAGES)" % box)
        assert b"MESSAGES 1)" in status[0], status


@pytest.mark.parametrize("command", COMMANDS)
def test_no_mailbox_name_spelling_reaches_bobs(imap_pair, command):
    _server, alice, bob = imap_pair
    for name in NAMES:
        lines = alice.cmd(command.format(name))
        # None of these names is one of alice's mailboxes, so nothing may succeed; what
        # is refused must not show bob's data either.
        assert lines[-1].startswith((b"t NO", b"t BAD")), (command, name, lines)
        assert b"swordfish" not in b"".join(lines), (command, name, lines)
        alice.cmd("UNSELECT")
    _bob_unchanged(bob)


def test_list_and_lsub_show_only_ones_own(imap_pair):
    _server, alice, _bob = imap_pair
    for command in ('LIST "" "*"', 'LIST "" "%"', 'LIST "../" "*"', 'LIST "/" "*"',
                    'LIST "" "../*"', 'LIST "#" "*"', 'LIST "~bob/" "*"', 'LSUB "" "*"',
                    'LIST (SUBSCRIBED) "" "*"', 'LIST "" "*" RETURN (STATUS (MESSAGES))',
                    'LIST "bob/" "*"', 'LIST "" "bob*"', 'LIST "" "*Secret*"'):
        text = b"".join(alice.cmd(command))
        assert b"BobSecret" not in text and b"bob" not in text.lower().replace(b"bob@", b""), \
            (command, text)
    namespace = alice.cmd("NAMESPACE")
    assert namespace[0].startswith(b'* NAMESPACE (("" "/")) NIL NIL'), namespace


def test_copy_move_and_search_stay_within_ones_own(imap_pair):
    _server, alice, bob = imap_pair
    data = b"Subject: alice's\r\n\r\nmine\r\n"
    assert alice.cmd(b"APPEND INBOX {%d+}\r\n" % len(data) + data)[-1].startswith(b"t OK")
    assert alice.cmd("SELECT INBOX")[-1].startswith(b"t OK")
    for name in NAMES:
        for command in ("COPY 1 {}", "MOVE 1 {}", "UID COPY 1:* {}"):
            answer = alice.cmd(command.format(name))[-1]
            assert answer.startswith((b"t NO", b"t BAD")), (command, name, answer)
        assert b"swordfish" not in b"".join(alice.cmd('SEARCH TEXT "swordfish"'))
    _bob_unchanged(bob)
    assert b"swordfish" not in b"".join(alice.cmd("FETCH 1:* BODY.PEEK[]"))
    alice.cmd("UNSELECT")
