"""`protolab check`: speak each protocol once and say which answered.

Each protocol's probe(target) talks to its server with a blocking client (a greeting, a
query, a handshake, never a bare TCP connect) and returns a one-line detail, or raises.
Probes run at once in threads, so a dead service costs one timeout, not one per service.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import registry
from .config import LabConfig
from .listeners import Listener


@dataclass(frozen=True)
class ProbeTarget:
    host: str
    config: LabConfig
    offset: int
    timeout: float

    def listeners(self, service: str) -> list[Listener]:
        return registry.listeners(self.config, service, self.offset)

    def listener(self, service: str, name: str) -> Listener:
        return registry.listener(self.config, service, name, self.offset)

    def port(self, service: str, name: str) -> int:
        return self.listener(service, name).port


@dataclass(frozen=True)
class Result:
    service: str
    ok: bool
    detail: str
    seconds: float
    skipped: bool = False


def probe(service: str, target: ProbeTarget) -> Result:
    if not any(item.active for item in target.listeners(service)):
        notes = "; ".join(item.note for item in target.listeners(service) if item.note)
        return Result(service, True, f"off ({notes or 'not active in this config'})", 0.0, True)
    start = time.monotonic()
    try:
        detail = registry.module(service).probe(target)
        ok = True
    except Exception as error:  # any failure of any client library is a failed probe
        detail = type(error).__name__
        if str(error):
            detail = f"{detail}: {error}".strip().splitlines()[0]
        ok = False
    return Result(service, ok, detail, time.monotonic() - start)


def with_failures(result: Result, failed: dict[str, str]) -> Result:
    """A probe's result, FAIL when the serve running the service says some of its
    listeners could not start (a probe speaks to one port: the one that works, maybe)."""
    if not failed:
        return result
    detail = "; ".join(failed.values()) + ("" if result.skipped else f" (probe: {result.detail})")
    return Result(result.service, False, detail, result.seconds)


def run(target: ProbeTarget, names: list[str]) -> list[Result]:
    if not names:
        return []
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return list(pool.map(lambda name: probe(name, target), names))


def table(target: ProbeTarget, results: list[Result]) -> str:
    lines = []
    for result in results:
        ports = ",".join(f"{item.port}/{item.transport}" for item in target.listeners(result.service)
                         if item.active)
        state = "off" if result.skipped else "ok" if result.ok else "FAIL"
        lines.append(f"{result.service:<6} {target.host}:{ports or '-':<18} {state:<4} "
                     f"{result.seconds * 1000:6.0f} ms  {result.detail}")
    return "\n".join(lines)
