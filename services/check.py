"""`protolab check`: speak each protocol once and say which answered.

Each protocol's probe(target) talks to its server with a blocking client (a greeting, a
query, a handshake, never a bare TCP connect) and returns a one-line detail, or raises.
Probes run at once in threads, so a dead service costs one timeout, not one per service.
A lab on the dual-stack wildcard is probed over both families (127.0.0.1 and ::1).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from . import registry
from .config import LabConfig
from .listeners import Listener, local_addresses, stack


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


def hosts_for(bind: str) -> list[str]:
    """Where check asks a lab listening on `bind`: loopback for a wildcard, both
    families' loopback for :: (when this host has ::1), else the address itself."""
    if bind == "0.0.0.0":
        return ["127.0.0.1"]
    if bind == "::":
        return ["127.0.0.1", "::1"] if stack().ipv6 and "::1" in local_addresses(6) \
            else ["127.0.0.1"]
    return [bind]


@dataclass(frozen=True)
class Result:
    service: str
    ok: bool
    detail: str
    seconds: float
    skipped: bool = False
    host: str = ""  # the address asked


def probe(service: str, target: ProbeTarget) -> Result:
    result = _probe(service, target)
    return replace(result, host=target.host)


def _probe(service: str, target: ProbeTarget) -> Result:
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
    return replace(result, ok=False, detail=detail, skipped=False)


def run(targets: list[ProbeTarget], names: list[str]) -> list[Result]:
    """Every service probed at every target (all at once), in table order per target."""
    jobs = [(name, target) for target in targets for name in names]
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(lambda job: probe(*job), jobs))


def table(target: ProbeTarget, results: list[Result]) -> str:
    lines = []
    for result in results:
        ports = ",".join(f"{item.port}/{item.transport}" for item in target.listeners(result.service)
                         if item.active)
        state = "off" if result.skipped else "ok" if result.ok else "FAIL"
        host = result.host or target.host
        where = f"[{host}]" if ":" in host else host
        lines.append(f"{result.service:<6} {where}:{ports or '-':<18} {state:<4} "
                     f"{result.seconds * 1000:6.0f} ms  {result.detail}")
    return "\n".join(lines)
