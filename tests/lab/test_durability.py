"""What a protocol acknowledges is durable before the acknowledgement (DESIGN.md, principle 2;
issue 11): the server is killed with SIGKILL the instant each acknowledgement arrives
(SMTP 250 after DATA, IMAP APPEND OK, FTP 226, HTTP PUT 201, SMB CLOSE), then started
again on the same data directory, 25 rounds per protocol; every item is there afterwards,
byte-identical, none lost and none twice.

Each round is a fresh server (the restart of the round before), so a write that only lived
in the killed process's memory, or a file that was renamed into place after the answer,
is missing at the end. `python -m tests.bench.durability` runs more rounds and prints them.
"""

from __future__ import annotations

import pytest

from tests.hardening import DURABLE_WRITES, kill_at_acknowledgements

ROUNDS = 25


@pytest.mark.parametrize("protocol", sorted(DURABLE_WRITES))
def test_kill_at_every_acknowledgement_loses_nothing(lab, protocol):
    written, _ = kill_at_acknowledgements(lab, protocol, ROUNDS, f"durability-{protocol}")
    server = lab.start(only=protocol)  # the last restart; it must come up on what was left
    DURABLE_WRITES[protocol][1](server.data, written)
    checked = server.check()
    assert checked.returncode == 0, checked.stdout + checked.stderr
