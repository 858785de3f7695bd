"""Scenarios: several faults switched on at once, with a title and what a student will see.

    protolab fault scenarios                  the shipped ones and the teacher's own
    protolab fault start SCENARIO [--target T] [--for 45m]
    protolab fault stop SCENARIO              its faults off (fault clear ID: one of them)

A scenario is one TOML file; the shipped ones are *.toml beside this module, a teacher's
own go in DATA/scenarios/*.toml (one with a shipped file's name replaces it):

    title = "Mail that will not leave"
    symptoms = '''swaks gets "451 4.7.1 greylisted" the first time ...'''
    solution = '''What the student should find: ...'''   # for the teacher's eyes
    [[fault]]
    kind = "smtp.greylist"
    target = ""        # optional: a fixed target; else --target, else everyone
    for = "30m"        # optional: else --for, else until stopped

Every kind is checked against `services.faults.kinds()` when the file is read, so a
misspelt kind is an error naming the file, not a fault that never acts.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..faults import FaultError, duration, kinds

if TYPE_CHECKING:
    from ..store import Store
    from ..store.faults import Fault

SHIPPED = Path(__file__).parent


@dataclass(frozen=True)
class Planned:
    kind: str
    target: str  # "" : the scenario's --target, else everyone
    seconds: float | None  # None: the scenario's --for, else until stopped


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    symptoms: str
    solution: str
    faults: tuple[Planned, ...]


def load(path: Path, known: dict[str, str] | None = None) -> Scenario:
    """One scenario file; FaultError (naming the file) when it cannot be used."""
    known = kinds() if known is None else known
    where = path.name
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise FaultError(f"{where}: {error}") from None
    title = data.get("title")
    if not isinstance(title, str) or not title.strip():
        raise FaultError(f"{where}: give a title")
    planned = []
    for number, fault in enumerate(data.get("fault", []), 1):
        planned.append(_planned(f"{where}: fault {number}", fault, known))
    if not planned:
        raise FaultError(f"{where}: a scenario needs at least one [[fault]]")
    return Scenario(path.stem, title.strip(), str(data.get("symptoms", "")).strip(),
                    str(data.get("solution", "")).strip(), tuple(planned))


def _planned(where: str, fault: Any, known: dict[str, str]) -> Planned:
    if not isinstance(fault, dict) or not isinstance(fault.get("kind"), str):
        raise FaultError(f"{where}: give kind = \"SERVICE.NAME\"")
    if fault["kind"] not in known:
        raise FaultError(f"{where}: unknown fault kind {fault['kind']!r} (protolab fault kinds)")
    target, seconds = fault.get("target", ""), fault.get("for")
    if not isinstance(target, str):
        raise FaultError(f"{where}: target must be a string")
    try:
        return Planned(fault["kind"], target.strip(), duration(str(seconds)) if seconds else None)
    except FaultError as error:
        raise FaultError(f"{where}: {error}") from None


def catalogue(own: Path | None = None) -> dict[str, Scenario | FaultError]:
    """Every scenario by id, the teacher's own (DATA/scenarios) over the shipped ones; a file
    that cannot be used is there as its error, so a list shows it instead of failing."""
    paths = {path.stem: path for path in sorted(SHIPPED.glob("*.toml"))}
    if own is not None and own.is_dir():
        paths.update({path.stem: path for path in sorted(own.glob("*.toml"))})
    known = kinds()
    found: dict[str, Scenario | FaultError] = {}
    for name, path in sorted(paths.items()):
        try:
            found[name] = load(path, known)
        except FaultError as error:
            found[name] = error
    return found


def find(own: Path | None, name: str) -> Scenario:
    scenario = catalogue(own).get(name)
    if scenario is None:
        raise FaultError(f"no scenario {name!r} (protolab fault scenarios)")
    if isinstance(scenario, FaultError):
        raise scenario
    return scenario


def start(store: Store, scenario: Scenario, target: str = "",
          seconds: float | None = None) -> list[Fault]:
    """Switch every fault of `scenario` on (again: it replaces a running copy)."""
    return store.faults.add_many(
        [(p.kind, p.target or target, p.seconds if p.seconds is not None else seconds)
         for p in scenario.faults], scenario.id)
