"""Kill -9 at the instant of each acknowledgement, more rounds than the test runs.

    python -m tests.bench.durability [--rounds N] [--only smtp,imap,ftp,http,smb]

For each protocol (SMTP 250 after DATA, IMAP APPEND OK, FTP 226, HTTP PUT 201, SMB CLOSE),
N rounds of: start the lab on one data directory, write one item, SIGKILL at its
acknowledgement; then a last start, and every item is looked for, byte-identical. Prints
rounds, items lost and the seconds a round took (mostly the restart).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from tests.conftest import LabFactory
from tests.hardening import DURABLE_WRITES, kill_at_acknowledgements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--only", default=",".join(DURABLE_WRITES))
    args = parser.parse_args()
    for protocol in args.only.split(","):
        with tempfile.TemporaryDirectory(prefix=f"protolab-durability-{protocol}-") as tmp:
            factory = LabFactory(Path(tmp))
            written, seconds = kill_at_acknowledgements(factory, protocol, args.rounds,
                                                        f"bench-{protocol}")
            server = factory.start(only=protocol)
            try:
                DURABLE_WRITES[protocol][1](server.data, written)
                verdict = "0 lost"
            except AssertionError as error:
                verdict = f"LOST: {error}"
            finally:
                factory.cleanup()
            print(f"{protocol:<5} {args.rounds} kills at the acknowledgement: {verdict}; "
                  f"round {statistics.median(seconds):.2f} s median, {max(seconds):.2f} s worst",
                  flush=True)


if __name__ == "__main__":
    main()
