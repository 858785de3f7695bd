"""FTP and FTPS (pyftpdlib on the lab's reactor) over the users' homes and the public area."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ..config import Invalid, ServiceSettings, check_address, setting
from ..listeners import Listener, Reach, curl

if TYPE_CHECKING:
    from twisted.application.service import IService

    from ..check import ProbeTarget
    from ..config import LabConfig
    from ..lab import Lab

# What can break (services/faults.py): `protolab fault add ftp.NAME [--target USER|ADDRESS]`.
FAULTS = {
    "wrong-pasv-address": "PASV announces 192.0.2.1, where nobody answers (EPSV is refused, "
                          "so clients fall back to PASV): the transfer hangs, then times out",
    "dead-data-port": "PASV and EPSV announce a port nobody listens on: the data connection "
                      "is refused at once",
}

CONTROL_PORT = 21
DATA_PORT = 20  # active-mode data connections come from here, as RFC 959 says
IMPLICIT_PORT = 990


@dataclass
class Settings(ServiceSettings):
    host: str = setting("ftp", "this service's host name in the lab zone")
    passive_low_port: int = setting(
        30000, "first port of the passive (PASV/EPSV) range; the port offset is added")
    passive_high_port: int = setting(
        30099, "last port of the passive range; publish the whole range 1:1 behind NAT")
    masquerade_address: str = setting(
        "", "the address PASV replies announce instead of the server's own (NAT, containers); "
            "empty = the address the client connected to")
    anonymous: bool = setting(
        False, "let 'anonymous' and 'ftp' log in (any password), read-only, to the public area")
    tls_required: bool = setting(
        False, "refuse USER/PASS and data connections until the client has done AUTH TLS "
               "and PROT P")
    implicit_tls: bool = setting(True, "also serve implicit FTPS (TLS from the first byte) on 990")
    idle_timeout: int = setting(300, "seconds a control connection may stay silent")
    max_connections: int = setting(
        200, "control connections at once (FTP and FTPS together); one more gets 421")
    max_connections_per_ip: int = setting(
        50, "control connections at once from one client address; one more gets 421")

    def validate(self) -> None:
        super().validate()
        if self.passive_low_port > self.passive_high_port:
            raise Invalid("passive_high_port", "must not be below passive_low_port")
        if self.masquerade_address:
            check_address("masquerade_address", self.masquerade_address)
        if self.idle_timeout < 1:
            raise Invalid("idle_timeout", "must be at least 1 second")
        for key in ("max_connections", "max_connections_per_ip"):
            if getattr(self, key) < 1:
                raise Invalid(key, "must be at least 1")


def passive_range(settings: Settings, offset: int) -> range:
    """The passive ports the lab uses: the configured range plus the port offset while all
    of it fits below 65536, else the configured range as it is (it cannot follow)."""
    low, high = settings.passive_low_port, settings.passive_high_port
    if high + offset <= 65535:
        low, high = low + offset, high + offset
    return range(low, high + 1)


@dataclass(frozen=True)
class _ControlListener(Listener):
    """The control listener, whose note names the passive range after the offset."""

    settings: Settings | None = field(default=None, compare=False)

    def shifted(self, offset: int) -> Listener:
        assert self.settings is not None
        return replace(self, port=self.port + offset,
                       note=_note(passive_range(self.settings, offset), DATA_PORT + offset))


def _note(passive: range, data_port: int) -> str:
    return f"passive {passive[0]}-{passive[-1]}, active from {data_port}"


def listeners(config: LabConfig) -> list[Listener]:
    s: Settings = config.service("ftp")
    return [
        _ControlListener("ftp", "ftp", CONTROL_PORT, tls="starttls",
                         note=_note(passive_range(s, 0), DATA_PORT), settings=s),
        Listener("ftp", "ftps", IMPLICIT_PORT, tls="implicit", active=s.implicit_tls,
                 note="" if s.implicit_tls else "[ftp] implicit_tls = false"),
    ]


def service(lab: Lab) -> IService:
    from .server import FTPService

    return FTPService(lab)


def probe(target: ProbeTarget) -> str:
    import ftplib

    with ftplib.FTP() as ftp:
        greeting = ftp.connect(target.host, target.port("ftp", "ftp"), timeout=target.timeout)
        features = ftp.sendcmd("FEAT").splitlines()[1:-1]
        return f"{greeting.splitlines()[0]}; FEAT {len(features)} features"


def clients(reach: Reach) -> list[str]:
    return [curl(reach, "ftp")]
