"""`protolab class ...`: import a roster into the store, export it, print the slips."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..journal import read as read_journal
from .exercises import Exercise, ExerciseError, Progress, catalogue, evaluate
from .roster import Plan, RosterError, Student, generate_password, parse, plan, render

if TYPE_CHECKING:
    from ..cli import Commands
    from ..config import LabConfig
    from ..store import Store


def current(store: Store) -> list[Student]:
    return [Student(*row) for row in store.roster.members()]


def apply(store: Store, todo: Plan) -> list[Student]:
    """Make the plan true in the store; returns the students added, with their passwords.
    The new users are one transaction (their hashes made in parallel; the passwords the
    lab generates, random and long enough, with the store's cheaper rounds), their roster
    rows another: a class of 30 is two fsyncs, not sixty."""
    added = [Student(s.name, s.team, s.password or generate_password()) for s in todo.add]
    if added:
        store.users.add_many([(s.name, s.password) for s in added],
                             random={s.name for s in todo.add if not s.password})
        store.roster.put_many([(s.name, s.team, s.password) for s in added])
    for student in todo.move:
        before = dict((name, pw) for name, _, pw in store.roster.members())[student.name]
        if student.password != before:
            store.users.set_password(student.name, student.password)
        store.roster.put(student.name, student.team, student.password)
    for name in todo.remove:
        if store.users.get(name) is not None:
            store.users.delete(name)
        store.roster.forget(name)
    return added


def add_commands(commands: Commands) -> None:
    common = commands.common
    group = commands.add("class", help="a roster in, a class out: students and their slips")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    load = sub.add_parser("import", help="make the lab's students those of a roster CSV "
                                         "(name, team, password); again: only the difference")
    common(load)
    load.add_argument("roster", metavar="ROSTER.csv")
    load.add_argument("--sheet", metavar="FILE",
                      help="where the credentials slips go (default DATA/class/sheet.html)")
    out = sub.add_parser("export", help="write the roster back as CSV (stdout, or FILE)")
    common(out)
    out.add_argument("file", metavar="FILE", nargs="?")
    grades = sub.add_parser("grades", help="who did which exercise, from the journal")
    common(grades)
    grades.add_argument("--csv", action="store_true", help="CSV instead of a table")
    slips = sub.add_parser("sheet", help="write the credentials slips again")
    common(slips)
    slips.add_argument("--sheet", metavar="FILE", help="default DATA/class/sheet.html")
    group.set_defaults(func=lambda args: run(args, commands))


def run(args: argparse.Namespace, commands: Commands) -> int:
    from ..store import Store

    config, data = commands.config(args), commands.data(args)
    store = Store(data)
    try:
        if args.action == "import":
            try:
                wanted = parse(Path(args.roster).read_text(encoding="utf-8-sig"), args.roster)
                todo = plan(current(store), wanted, {u.name for u in store.users.list()})
            except OSError as error:
                raise commands.Error(f"{args.roster}: {error.strerror}") from None
            except RosterError as error:
                raise commands.Error(str(error)) from None
            apply(store, todo)
            sheet = write_sheet(store, config, data, args.sheet)
            print(f"added {len(todo.add)}, changed {len(todo.move)}, removed {len(todo.remove)} "
                  f"({len(current(store))} students); slips: {sheet}")
        elif args.action == "export":
            text = render(current(store))
            if args.file:
                Path(args.file).write_text(text)
            else:
                sys.stdout.write(text)
        elif args.action == "grades":
            try:
                exercises = catalogue(data / "exercises")
            except ExerciseError as error:
                raise commands.Error(str(error)) from None
            students = sorted(s.name for s in current(store))
            if not students:
                raise commands.Error("no students yet (protolab class import ROSTER.csv)")
            leases = {lease.ip: lease.hostname for lease in store.net.leases() if lease.hostname}
            progress = evaluate(exercises, list(read_journal(data / "journal")), set(students),
                                leases)
            sys.stdout.write(grid(exercises, students, progress, args.csv))
        else:
            print(f"slips: {write_sheet(store, config, data, args.sheet)}")
    finally:
        store.close()
    return 0


def grid(exercises: list[Exercise], students: list[str], progress: Progress, as_csv: bool) -> str:
    """Students by exercises: a table for the terminal (x = done), or CSV (1/0)."""
    if as_csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["student", *(e.id for e in exercises)])
        for name in students:
            writer.writerow([name, *(int(bool(progress.sessions(name, e.id))) for e in exercises)])
        return out.getvalue()
    width = max(len(name) for name in students)
    lines = [f"{'':{width}}  " + " ".join(f"{n + 1:>2}" for n in range(len(exercises)))]
    for name in students:
        marks = " ".join(f"{'x' if progress.sessions(name, e.id) else '.':>2}" for e in exercises)
        done = sum(bool(progress.sessions(name, e.id)) for e in exercises)
        lines.append(f"{name:{width}}  {marks}   {done}/{len(exercises)}")
    lines.append("")
    lines += [f"{n + 1:>2} {e.title}" for n, e in enumerate(exercises)]
    return "\n".join(lines) + "\n"


def write_sheet(store: Store, config: LabConfig, data: Path, where: str | None) -> Path:
    from .sheet import ca_fingerprint
    from .sheet import render as render_sheet

    path = Path(where) if where else data / "class" / "sheet.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    ca = data / "tls" / "ca.crt"
    fingerprint = ca_fingerprint(ca) if ca.is_file() else "(the lab has not started yet)"
    address = config.lab.address
    hosts = {"lab DNS": address, "portal": f"http://{address}/", "domain": config.lab.domain}
    path.touch(mode=0o600)  # passwords: for the teacher's eyes
    path.write_text(render_sheet(current(store), config.lab.domain, hosts, fingerprint))
    return path
