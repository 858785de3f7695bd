"""The scripted client session of the container tests, against any lab a client container
reaches: the compose lab (tests/lab/test_containers.py) and the Kubernetes lab's Pod run by
podman kube play (tests/k8s/). Each step runs real clients (dig, curl, swaks, lftp,
smbclient) in the client container and asserts what they got; a step whose services are
not all registered is left out by its caller.
"""

from __future__ import annotations

import re
import subprocess
import time
from typing import Protocol

from services.config import LabConfig

from . import engine

TOKEN = f"protolab-containers-{int(time.time())}"


class Lab(Protocol):
    """What a session needs of a lab: its zone (lab.toml and the environment as the lab
    reads them), each service's address, the registered services, and a shell on a client."""

    zone: LabConfig
    services: list[str]

    def address(self, service: str) -> str: ...

    def client(self, script: str, timeout: float = 60, check: bool = True
               ) -> subprocess.CompletedProcess: ...


def in_client(container: str, script: str, timeout: float = 60, check: bool = True
              ) -> subprocess.CompletedProcess:
    """Run a shell script (sh -ec) in a client container."""
    return engine.run("podman", "exec", container, "sh", "-ec", script, timeout=timeout,
                      check=check)


def host(lab: Lab, service: str) -> str:
    """How the client names a service: its DNS name when the lab DNS runs."""
    if "dns" in lab.services:
        return lab.zone.fqdn(lab.zone.service(service).host)
    return lab.address(service)


def resolves_the_lab_names(lab: Lab) -> None:
    domain = lab.zone.lab.domain
    for service in lab.services:
        settings = lab.zone.service(service)
        for name in [settings.host, *settings.aliases]:
            answer = lab.client(f"dig +short {name}.{domain}").stdout.split()
            # An alias that [hosts] does not list is a CNAME to the service's host.
            *cnames, address = answer or [""]
            assert address == lab.address(service), (service, name, answer)
            assert all(c == f"{lab.zone.fqdn(settings.host)}." for c in cnames), answer
    # the search domain: short names work, as students type them
    assert lab.client("nslookup www").returncode == 0
    mx = lab.client(f"dig +short MX {domain}").stdout
    assert f"mail.{domain}" in mx or lab.zone.fqdn(lab.zone.service("smtp").host) in mx, mx


def fetches_a_page_over_http(lab: Lab) -> None:
    www = host(lab, "http")
    page = lab.client(f"curl -sS -f http://{www}/lab/http/basic.html").stdout
    assert "<html" in page.lower()
    # HTTPS with the lab CA the portal hands out: the certificate (made by whichever
    # container started first, on the shared volume) names this host.
    secure = lab.client(f"curl -sS -f -o /tmp/ca.crt http://{www}/ca.crt && "
                        f"curl -sS -f --cacert /tmp/ca.crt "
                        f"https://{www}/lab/http/basic.html").stdout
    assert secure == page


def sends_mail_then_reads_it(lab: Lab) -> None:
    """swaks to alice, then the message read back over IMAP and POP3 (those registered)."""
    domain = lab.zone.lab.domain
    sent = lab.client(f"swaks --server {host(lab, 'smtp')} --from bob@{domain} "
                      f"--to alice@{domain} --header 'Subject: {TOKEN}' --body {TOKEN}")
    assert re.search(r"<- +250 ", sent.stdout), sent.stdout
    if "imap" in lab.services:
        imap = host(lab, "imap")
        found = lab.client(f"curl -sS -u alice:alice 'imap://{imap}/INBOX' "
                           f"-X 'UID SEARCH SUBJECT {TOKEN}'").stdout
        uids = found.split("SEARCH", 1)[1].split()
        assert uids, found
        message = lab.client(f"curl -sS -u alice:alice 'imap://{imap}/INBOX;UID={uids[-1]}'")
        assert TOKEN in message.stdout
    if "pop3" in lab.services:
        pop3 = host(lab, "pop3")
        listing = lab.client(f"curl -sS -u alice:alice pop3://{pop3}/").stdout
        number = listing.split()[-2]  # the newest: "N SIZE" on the last line
        message = lab.client(f"curl -sS -u alice:alice pop3://{pop3}/{number}")
        assert TOKEN in message.stdout


def puts_a_file_then_gets_it(lab: Lab) -> None:
    """lftp puts a file in alice's public_html; it is read back over SMB and HTTP (those
    registered)."""
    ftp = host(lab, "ftp")
    lab.client(f"echo {TOKEN} > /tmp/{TOKEN}.txt && "
               f"lftp -u alice,alice -e 'set ftp:ssl-allow no; mkdir -p public_html; "
               f"put -O public_html /tmp/{TOKEN}.txt; bye' {ftp}")
    listing = lab.client(f"curl -sS -u alice:alice ftp://{ftp}/public_html/").stdout
    assert f"{TOKEN}.txt" in listing
    if "smb" in lab.services:
        got = lab.client(f"smbclient //{host(lab, 'smb')}/alice -U alice%alice "
                         f"-c 'get public_html/{TOKEN}.txt -'").stdout
        assert TOKEN in got
    if "http" in lab.services:
        page = lab.client(f"curl -sS -f http://{host(lab, 'http')}/~alice/{TOKEN}.txt").stdout
        assert page.strip() == TOKEN


def run_all(lab: Lab) -> list[str]:
    """Every step whose services are registered, in the container tests' order (DNS, HTTP,
    SMTP then IMAP and POP3, FTP then SMB and HTTP); the names of the steps run."""
    steps = [("dns", resolves_the_lab_names), ("http", fetches_a_page_over_http),
             ("smtp", sends_mail_then_reads_it), ("ftp", puts_a_file_then_gets_it)]
    done = []
    for service, step in steps:
        if service in lab.services:
            step(lab)
            done.append(step.__name__)
    return done
