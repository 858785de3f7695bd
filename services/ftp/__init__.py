"""FTP and FTPS (pyftpdlib on the lab's reactor) over the users' homes and the public area."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import Invalid, ServiceSettings, check_address, setting
from ..listeners import Listener

if TYPE_CHECKING:
    from twisted.application.service import IService

    from ..check import ProbeTarget
    from ..config import LabConfig
    from ..lab import Lab

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

    def validate(self) -> None:
        super().validate()
        if self.passive_low_port > self.passive_high_port:
            raise Invalid("passive_high_port", "must not be below passive_low_port")
        if self.masquerade_address:
            check_address("masquerade_address", self.masquerade_address)
        if self.idle_timeout < 1:
            raise Invalid("idle_timeout", "must be at least 1 second")


def listeners(config: LabConfig) -> list[Listener]:
    s: Settings = config.service("ftp")
    passive = f"passive {s.passive_low_port}-{s.passive_high_port}, active from {DATA_PORT}"
    return [
        Listener("ftp", "ftp", CONTROL_PORT, tls="starttls", note=passive + " (+offset)"),
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
