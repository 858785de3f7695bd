"""Classroom speed: a roster of 30 imported, and the live grid worked out over a class's
journal.

    python3 -m tests.bench.classroom [--students 30] [--events 100000]

The import is what `protolab class import` does after parsing (users with their hashes and
mailboxes, the roster rows): wall and CPU time, next to the peer in the same run, the same
users made one at a time as `protolab user add` makes each (one transaction per user, the
full PBKDF2 rounds), and the password hashes alone at both settings (the generated
passwords' RANDOM_ITERATIONS, a teacher's ITERATIONS). Then the whole command, `protolab
class import` of a roster file in a new process (start-up, parsing, the store, the
slips). The grid is the evaluation the teacher's page and GET /api/v1/class/progress run
when the journal grew: every shipped exercise over N journal events of that many students.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from services.classroom.commands import apply
from services.classroom.exercises import catalogue, evaluate
from services.classroom.roster import Student, plan
from services.store import Store
from services.store.users import ITERATIONS, RANDOM_ITERATIONS, hash_password


def timed(work) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def journal(students: int, count: int) -> list[dict]:
    """Sessions of SMTP, HTTP, POP3 and DNS by random students, as the services journal."""
    rng = random.Random(16)
    events: list[dict] = []
    shapes = [
        ("smtp", [("open", "smtp"), ("command", "EHLO pc"), ("command", "MAIL FROM:<a@lab.test>"),
                  ("command", "RCPT TO:<a@lab.test>"), ("command", "DATA"),
                  ("event", "delivered 30 bytes"), ("close", "")]),
        ("http", [("open", "http"), ("command", "GET /ca.crt HTTP/1.1"), ("reply", "304 0 bytes"),
                  ("close", "")]),
        ("pop3", [("open", "pop3"), ("auth", "USER/PASS ok"), ("command", "RETR 1"),
                  ("reply", "+OK"), ("close", "")]),
    ]
    session = 0
    while len(events) < count:
        session += 1
        student = f"stu{rng.randrange(students)}"
        service, steps = rng.choice(shapes)
        for kind, text in steps:
            events.append({"ts": time.time(), "service": service, "session": f"s{session}",
                           "peer": f"10.0.{rng.randrange(students)}.9:4000",
                           "user": student if kind != "open" else "", "kind": kind,
                           "text": text})
    return events[:count]


def command_wall(tmp: Path, roster: list[Student]) -> float:
    """The command as a teacher runs it, on a data directory of its own."""
    path = tmp / "roster.csv"
    path.write_text("".join(f"{s.name},{s.team},\n" for s in roster))
    root = Path(__file__).resolve().parents[2]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "services", "class", "import", str(path),
                    "--data", str(tmp / "command")], check=True, cwd=root,
                   stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(root)})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    roster = [Student(f"stu{n}", f"team{n // 5:02d}") for n in range(args.students)]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "ours")
        ours = timed(lambda: apply(store, plan([], roster, set())))
        store.close()
        peer_store = Store(Path(tmp) / "peer")
        peer = timed(lambda: [peer_store.users.add(s.name, "pw-0123456") for s in roster])
        peer_store.close()
        command = command_wall(Path(tmp), roster)
    hashing = {}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for rounds in (RANDOM_ITERATIONS, ITERATIONS):
            hashing[rounds] = timed(lambda r=rounds: list(pool.map(
                lambda pw: hash_password(pw, iterations=r), ["pw-0123456"] * len(roster))))
    print(f"class import of {args.students}: {ours[0]:.3f} s wall, {ours[1]:.3f} s CPU "
          f"(one user at a time: {peer[0]:.3f} s wall, {peer[1]:.3f} s CPU; "
          f"ratio {peer[0] / ours[0]:.1f}x); the {len(roster)} password hashes alone, on "
          f"{os.cpu_count()} CPUs: {hashing[RANDOM_ITERATIONS][0]:.3f} s wall at "
          f"{RANDOM_ITERATIONS} rounds (generated), {hashing[ITERATIONS][0]:.3f} s at "
          f"{ITERATIONS} (a teacher's)")
    print(f"protolab class import ROSTER of {args.students} (a new process): "
          f"{command:.3f} s wall")
    events = journal(args.students, args.events)
    students = {s.name for s in roster}
    exercises = catalogue()
    wall, cpu = timed(lambda: evaluate(exercises, events, students))
    print(f"grid of {args.students} x {len(exercises)} over {len(events)} events: "
          f"{wall:.3f} s wall, {cpu:.3f} s CPU")


if __name__ == "__main__":
    main()
