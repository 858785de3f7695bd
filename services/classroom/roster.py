"""A class roster: the CSV a teacher writes, and the difference between it and the lab.

    name,team,password
    alice,team07,
    bob,team07,s3cret
    carol,,

`name` is the lab user name (the one identity rule: lower case); `team` and `password`
are optional (an empty password is generated). A header row is optional too. Pure
functions: the store applies a Plan (services/store/roster.py), the CLI prints it.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
from dataclasses import dataclass, field

from ..config import Invalid, check_name

TEAM_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")  # one DNS label
# No 0/O, 1/l/I: a password read off a paper slip is typed right the first time.
ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
HEADER = ("name", "team", "password")


class RosterError(Exception):
    """A line of the roster that cannot be used, as one line naming it."""


@dataclass(frozen=True)
class Student:
    name: str
    team: str = ""
    password: str = ""  # "" in a roster: generate one


@dataclass
class Plan:
    add: list[Student] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    move: list[Student] = field(default_factory=list)  # team changed (or password given)

    def empty(self) -> bool:
        return not (self.add or self.remove or self.move)


# 13 of 32 symbols: 65 bits, over the store's RANDOM_BITS, so a generated password is hashed
# with the store's cheaper rounds (services/store/users.py says why that is sound).
GENERATED_LENGTH = 13
GENERATED_BITS = GENERATED_LENGTH * (len(ALPHABET).bit_length() - 1)


def generate_password(length: int = GENERATED_LENGTH) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def parse(text: str, source: str = "roster") -> list[Student]:
    """The students of a roster CSV, checked; raises RosterError naming the line."""
    students: dict[str, Student] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), 1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and tuple(cell.lower() for cell in cells[:3]) == HEADER[:len(cells[:3])]:
            continue
        if len(cells) > 3:
            raise RosterError(f"{source}:{number}: {len(cells)} columns (name, team, password)")
        name, team, password = (*cells, "", "")[:3]
        name, team = name.lower(), team.lower()
        try:
            check_name(name)
        except Invalid as error:
            raise RosterError(f"{source}:{number}: {error.message}") from None
        if team and not TEAM_RE.match(team):
            raise RosterError(f"{source}:{number}: team {team!r} must be one DNS label "
                              "(a-z 0-9 -, at most 32)")
        if name in students:
            raise RosterError(f"{source}:{number}: {name} is in the roster twice")
        students[name] = Student(name, team, password)
    return list(students.values())


def plan(current: list[Student], wanted: list[Student], existing_users: set[str]) -> Plan:
    """What makes the lab's roster `current` into `wanted`. A name that is a lab user
    the roster did not make is refused, never taken over (the teacher's own account)."""
    now = {student.name: student for student in current}
    result = Plan()
    names = existing_users | {student.name for student in wanted}
    for student in wanted:
        if student.team in names:  # its share and FTP folder would be a user's home's name
            raise RosterError(f"team {student.team!r} is also a user's name: rename the team")
        before = now.pop(student.name, None)
        if before is None:
            if student.name in existing_users:
                raise RosterError(f"{student.name} is already a lab user not made by a roster; "
                                  f"protolab user del {student.name} first, or rename them")
            result.add.append(student)
        elif before.team != student.team or (student.password and
                                             student.password != before.password):
            result.move.append(Student(student.name, student.team,
                                       student.password or before.password))
    result.remove = sorted(now)
    return result


def render(students: list[Student]) -> str:
    """The roster as CSV, with its header: what `class export` writes."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    for student in sorted(students, key=lambda s: (s.team, s.name)):
        writer.writerow((student.name, student.team, student.password))
    return out.getvalue()
