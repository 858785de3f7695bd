"""Exercises the lab checks from its own journal.

An exercise is one small TOML file: a title, the student's instructions, and the checks
that show it was done. A check is a list of steps that must all be seen, in order, within
one session of the student's (a step matches one journal event: its service, or one of a
list of them, its kind, the listener the session came in on, a regular expression on its
text, and its structured fields: a string is a regular expression on the field's value,
anything else must be equal). Every check of an exercise must hold, each in any session:

    title = "A conditional GET"
    instructions = '''curl -v http://www/ ... then again with If-None-Match ...'''
    [[check]]
    steps = [{service = "http", kind = "reply", text = '^304\\b'}]
    [[check]]   # (another exercise: a TLS handshake whose secrets went to the key log)
    steps = [{service = ["http", "imap"], kind = "event", fields = {keylog = true}}]

The shipped catalogue is catalogue/*.toml beside this module; a teacher's own go in
DATA/exercises/*.toml (one with a shipped file's name replaces it).

Whose an event is: its session's login, when the session logged in; else the student who
logged in from that client address in any session (a lab host is one student's), or whose
name is the DHCP lease's host name for that address (the store's lease, or the journal's
record of one: a released lease still says whose the address was). Pure functions over
events: the journal is read by the caller.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CATALOGUE = Path(__file__).with_name("catalogue")
KINDS = {"open", "close", "command", "reply", "auth", "event", "packet"}
# DHCP's journal note for an ACK: "dhcp bound 10.0.0.7 to 52:54:00:..:..:.. as stu1"
BOUND = re.compile(r"^dhcp bound (?P<ip>\S+) to \S+ as (?P<name>[^\s.]+)")


class ExerciseError(Exception):
    """An exercise file that cannot be used, as one line naming the file and the key."""


@dataclass(frozen=True)
class Step:
    services: frozenset[str]
    kind: str = ""
    listener: str = ""
    text: re.Pattern[str] | None = None
    fields: tuple[tuple[str, Any], ...] = ()  # (name, a compiled pattern or a value)

    def matches(self, event: dict[str, Any], listener: str) -> bool:
        return (event.get("service") in self.services
                and (not self.kind or event.get("kind") == self.kind)
                and (not self.listener or listener == self.listener)
                and (self.text is None or self.text.search(event.get("text", "")) is not None)
                and all(_field_matches(event.get("fields") or {}, name, wanted)
                        for name, wanted in self.fields))


def _field_matches(fields: dict[str, Any], name: str, wanted: Any) -> bool:
    if name not in fields:
        return False
    if isinstance(wanted, re.Pattern):
        return wanted.search(str(fields[name])) is not None
    return bool(fields[name] == wanted and type(fields[name]) is type(wanted))


@dataclass(frozen=True)
class Exercise:
    id: str
    title: str
    instructions: str
    checks: tuple[tuple[Step, ...], ...]


def load(path: Path) -> Exercise:
    where = path.name
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ExerciseError(f"{where}: {error}") from None
    title, instructions = data.get("title"), data.get("instructions", "")
    if not isinstance(title, str) or not title:
        raise ExerciseError(f"{where}: title: a non-empty string is needed")
    checks = []
    for number, check in enumerate(data.get("check", []), 1):
        steps = check.get("steps") if isinstance(check, dict) else None
        if not isinstance(steps, list) or not steps:
            raise ExerciseError(f"{where}: check {number}: steps: a list of steps is needed")
        checks.append(tuple(_step(where, number, step) for step in steps))
    if not checks:
        raise ExerciseError(f"{where}: no [[check]]: nothing would show it was done")
    return Exercise(path.stem, title, str(instructions).strip(), tuple(checks))


def _step(where: str, number: int, step: Any) -> Step:
    service = step.get("service") if isinstance(step, dict) else None
    services = [service] if isinstance(service, str) else service
    if not isinstance(services, list) or not services or \
            not all(isinstance(name, str) for name in services):
        raise ExerciseError(f"{where}: check {number}: every step needs a service "
                            "(a name or a list of names)")
    unknown = set(step) - {"service", "kind", "listener", "text", "fields"}
    if unknown:
        raise ExerciseError(f"{where}: check {number}: unknown keys {', '.join(sorted(unknown))}")
    kind = step.get("kind", "")
    if kind and kind not in KINDS:
        raise ExerciseError(f"{where}: check {number}: kind {kind!r} is not one of "
                            f"{', '.join(sorted(KINDS))}")
    fields = step.get("fields", {})
    if not isinstance(fields, dict):
        raise ExerciseError(f"{where}: check {number}: fields: a table of field = value")
    try:
        text = re.compile(step["text"]) if "text" in step else None
    except re.error as error:
        raise ExerciseError(f"{where}: check {number}: text: {error}") from None
    try:
        wanted = tuple((name, re.compile(value) if isinstance(value, str) else value)
                       for name, value in sorted(fields.items()))
    except re.error as error:
        raise ExerciseError(f"{where}: check {number}: fields: {error}") from None
    return Step(frozenset(services), kind, step.get("listener", ""), text, wanted)


def catalogue(own: Path | None = None) -> list[Exercise]:
    """The shipped exercises, with the teacher's own (DATA/exercises) over them by name."""
    paths = {path.stem: path for path in sorted(CATALOGUE.glob("*.toml"))}
    if own is not None and own.is_dir():
        paths.update({path.stem: path for path in sorted(own.glob("*.toml"))})
    return [load(path) for _, path in sorted(paths.items())]


@dataclass
class Progress:
    """Per student, per exercise: the session ids that show it (empty: not done)."""
    done: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def sessions(self, student: str, exercise: str) -> list[str]:
        return self.done.get(student, {}).get(exercise, [])


def owners(events: list[dict[str, Any]], students: set[str],
           leases: dict[str, str]) -> dict[str, str]:
    """Session id (or, for sessionless events such as DNS, "@ADDRESS") -> student."""
    address_of: dict[str, str] = {}
    by_address: dict[str, set[str]] = {}
    bound: dict[str, str] = {}  # DHCP sessions that leased an address under a name
    for event in events:
        host = _host(event.get("peer", ""))
        address_of.setdefault(event.get("session", ""), host)
        if event.get("user") in students:
            by_address.setdefault(host, set()).add(event["user"])
        lease = BOUND.match(event.get("text", "")) if event.get("service") == "dhcp" else None
        if lease and lease["name"] in students:  # the journal's own record of the lease:
            bound[event.get("session", "")] = lease["name"]  # it outlives the lease itself
            by_address.setdefault(lease["ip"], set()).add(lease["name"])
    for address, name in leases.items():
        if name in students:
            by_address.setdefault(address, set()).add(name)
    result: dict[str, str] = {}
    for event in events:
        session, user = event.get("session", ""), event.get("user", "")
        if user in students:
            result[session] = user  # a login is the strongest evidence of whose it is
    for session, name in bound.items():
        result.setdefault(session, name)
    for session, host in address_of.items():
        if session not in result and len(by_address.get(host, ())) == 1:
            result[session] = next(iter(by_address[host]))
    for address, names in by_address.items():
        if len(names) == 1:
            result["@" + address] = next(iter(names))
    return result


def evaluate(exercises: Iterable[Exercise], events: list[dict[str, Any]], students: set[str],
             leases: dict[str, str] | None = None) -> Progress:
    """Which student did which exercise, with the sessions that show it."""
    whose = owners(events, students, leases or {})
    sessions: dict[str, list[dict[str, Any]]] = {}
    listener: dict[str, str] = {}
    for event in events:
        key = event.get("session", "")
        if key in ("", "-"):  # a packet with no session (DNS): one per client address
            key = "@" + _host(event.get("peer", ""))
        if event.get("kind") == "open":
            listener[key] = event.get("text", "")
        sessions.setdefault(key, []).append(event)
    progress = Progress({name: {} for name in students})
    theirs: dict[str, list[str]] = {}  # student -> their session keys, oldest first
    for key in sessions:
        if whose.get(key) in students:
            theirs.setdefault(whose[key], []).append(key)
    # a check can only hold in a session of its services: most sessions are skipped unread
    services = {key: {e.get("service") for e in items} for key, items in sessions.items()}
    for exercise in exercises:
        for student in students:
            evidence: list[str] = []
            for check in exercise.checks:
                found = next((key for key in theirs.get(student, ())
                              if all(step.services & services[key] for step in check)
                              and _in_order(check, sessions[key], listener.get(key, ""))), None)
                if found is None:
                    break
                evidence.append(found)
            else:
                progress.done[student][exercise.id] = evidence
    return progress


def _in_order(steps: tuple[Step, ...], events: list[dict[str, Any]], listener: str) -> bool:
    position = 0
    for event in events:
        if steps[position].matches(event, listener):
            position += 1
            if position == len(steps):
                return True
    return False


def _host(peer: str) -> str:
    host, _, port = peer.rpartition(":")
    return (host if port.isdigit() else peer).strip("[]")
