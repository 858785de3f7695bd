"""Faults switched on while the lab runs: broken networks to troubleshoot (issue 17).

    protolab fault kinds                      what can break, per service
    protolab fault add KIND [--target T] [--for 10m]
    protolab fault list / fault clear [ID]
    protolab fault scenarios / fault start SCENARIO / fault stop SCENARIO  (services/scenarios)

A protocol package declares what can break in it (`FAULTS = {"name": "what a student
sees"}` in its __init__), giving kinds named `SERVICE.NAME`; where it would act, it asks
`lab.faults.find(KIND, *targets)` with what identifies the client there (its address, its
login, the name it asked for) and journals the fault when it acts. A fault with a target
touches only that target; one without touches everyone. The faults live in the store, so
`protolab fault` works on a running lab and every process sees the change within the
store's poll (0.2 s).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import registry

if TYPE_CHECKING:
    from .cli import Commands
    from .store import Store
    from .store.faults import Fault

DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class FaultError(Exception):
    """A bad kind or duration, as one line."""


def kinds() -> dict[str, str]:
    """Every fault kind of every protocol: SERVICE.NAME -> what a student sees."""
    from . import tls  # TLS is no package of the registry: its faults act in every service

    found = {f"tls.{fault}": effect for fault, effect in tls.FAULTS.items()}
    for name in registry.names():
        for fault, effect in getattr(registry.module(name), "FAULTS", {}).items():
            found[f"{name}.{fault}"] = effect
    return found


def duration(text: str) -> float:
    """'90', '90s', '10m', '2h', '1d' -> seconds."""
    match = DURATION_RE.match(text.strip())
    if not match or float(match[1]) <= 0:
        raise FaultError(f"--for {text!r}: a duration such as 30s, 10m, 2h")
    return float(match[1]) * UNITS[match[2]]


class Board:
    """What the services ask on their hot paths: the store's faults, cached, and read
    again when the store says they changed (its `faults` topic)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._faults: list[Fault] | None = None
        store.subscribe("faults", self._changed)

    def _changed(self, topics: set[str]) -> None:
        self._faults = None

    def _active(self) -> list[Fault]:
        faults = self._faults
        if faults is None:
            faults = self._faults = self.store.faults.active()
        return faults

    def any_on(self, service: str) -> bool:
        """Whether some fault of SERVICE is on, for anyone: a hot path that skips its fault
        checks (or its fast path declines) while none is, at the cost of this test."""
        faults = self._active()
        if not faults:
            return False
        now, prefix = time.time(), service + "."
        return any(f.kind.startswith(prefix) and (f.until is None or f.until > now) for f in faults)

    def find(self, kind: str, *targets: str | None) -> Fault | None:
        """The active fault of KIND for any of `targets` (or for everyone), else None."""
        faults = self._active()
        if not faults:
            return None
        now = time.time()
        wanted = {target.lower() for target in targets if target}
        for fault in faults:
            if fault.kind == kind and (fault.until is None or fault.until > now) \
                    and (not fault.target or fault.target.lower() in wanted):
                return fault
        return None


def describe(fault: Fault, now: float | None = None) -> str:
    now = time.time() if now is None else now
    left = "until cleared" if fault.until is None else f"{max(0, fault.until - now):.0f} s left"
    part = f" (scenario {fault.scenario})" if fault.scenario else ""
    return f"#{fault.id} {fault.kind} for {fault.target or 'everyone'}, {left}{part}"


def switch_on(store: Store, kind: str, target: str = "", seconds: str | float | None = None) -> Fault:
    """Validate and add one fault: what the CLI, the API and the dashboard all do."""
    if kind not in kinds():
        raise FaultError(f"unknown fault {kind!r} (protolab fault kinds)")
    if isinstance(seconds, str):
        seconds = duration(seconds) if seconds.strip() else None
    elif seconds is not None and seconds <= 0:
        raise FaultError("a fault's duration must be positive")
    return store.faults.add(kind, target.strip(), seconds)


# --- the commands ----------------------------------------------------------------------

def add_commands(commands: Commands) -> None:
    common = commands.common
    fault = commands.add("fault", help="break the lab on purpose, while it runs")
    sub = fault.add_subparsers(dest="action", required=True, metavar="ACTION")
    common(sub.add_parser("kinds", help="what can break, per service"))
    def switch(name: str, help: str, what: str, target: str, seconds: str) -> None:
        parser = sub.add_parser(name, help=help)
        common(parser)
        parser.add_argument(what.lower(), metavar=what, help=f"its name (protolab fault {what.lower()}s)")
        parser.add_argument("--target", metavar="NAME|ADDRESS|USER", default="", help=target)
        parser.add_argument("--for", dest="seconds", metavar="DURATION", help=seconds)

    switch("add", "switch a fault on", "KIND",
           "only this client address, user or name (default: everyone)", "e.g. 30s, 10m, 2h")
    common(sub.add_parser("list", help="the faults that are on"))
    clear = sub.add_parser("clear", help="switch one fault off (by its #ID), or all of them")
    common(clear)
    clear.add_argument("id", nargs="?", type=int, metavar="ID")
    common(sub.add_parser("scenarios", help="the scenarios: several faults with their symptoms"))
    switch("start", "switch a scenario's faults on", "SCENARIO",
           "for the scenario's faults that name no target (default: everyone)",
           "for those that give no duration (default: until stopped)")
    end = sub.add_parser("stop", help="switch a scenario's faults off")
    common(end)
    end.add_argument("scenario", metavar="SCENARIO")
    fault.set_defaults(func=lambda args: run(args, commands))


def run(args: argparse.Namespace, commands: Commands) -> int:
    from .scenarios import catalogue

    if args.action == "kinds":
        known = kinds()
        width = max(len(kind) for kind in known)
        for kind, effect in sorted(known.items()):
            print(f"{kind:{width}}  {effect}")
        return 0
    own = commands.data(args) / "scenarios"
    if args.action == "scenarios":
        for name, scenario in catalogue(own).items():
            if isinstance(scenario, FaultError):
                print(f"{name}: cannot be used: {scenario}")
                continue
            faults = ", ".join(p.kind + (f" for {p.target}" if p.target else "") for p in scenario.faults)
            print(f"{name}: {scenario.title}\n    faults: {faults}")
            if scenario.symptoms:
                print("    symptoms: " + "\n    ".join(scenario.symptoms.splitlines()))
        return 0
    store = commands.store(args, commands.config(args))
    try:
        _change(args, store, own)
    except FaultError as error:  # a bad kind, duration or scenario file: a usage error
        raise commands.Error(str(error), 2) from None
    except LookupError as error:  # nothing by that id or name is on
        raise commands.Error(str(error.args[0])) from None
    finally:
        store.close()
    return 0


def _change(args: argparse.Namespace, store: Store, own: Path) -> None:
    from .scenarios import find, start

    if args.action == "add":
        print(f"on: {describe(switch_on(store, args.kind, args.target, args.seconds))}")
    elif args.action == "start":
        scenario = find(own, args.scenario)
        faults = start(store, scenario, args.target.strip(), duration(args.seconds) if args.seconds else None)
        print(f"{scenario.title}: on")
        for fault in faults:
            print(f"  {describe(fault)}")
    elif args.action == "stop":
        count = store.faults.clear(scenario=args.scenario)
        if not count:
            raise LookupError(f"scenario {args.scenario!r} is not on (protolab fault list)")
        print(f"stopped {args.scenario}: {count} fault{'s' if count != 1 else ''} off")
    elif args.action == "list":
        for fault in store.faults.active():
            print(describe(fault))
    else:
        count = store.faults.clear(args.id)
        if args.id is not None and not count:
            raise LookupError(f"no fault #{args.id} (protolab fault list)")
        print(f"cleared {count} fault{'s' if count != 1 else ''}")
