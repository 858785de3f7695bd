"""The plug-in contract: a protocol is one package plus its registry line. A package the
rest of the tree has never heard of gets its SRV record, its place in the mail autoconfig,
its client lines on the portal and its listener lookups from its own definitions."""

from __future__ import annotations

import sys
import types
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import pytest

from services import config as config_module
from services import registry
from services.config import ServiceSettings, setting
from services.listeners import Listener, Reach, port_offset


@dataclass
class JMAPSettings(ServiceSettings):
    host: str = setting("mail", "the JMAP server's host name in the lab zone")


def jmap_listeners(config: config_module.LabConfig) -> list[Listener]:
    return [Listener("jmap", "jmap", 8080, srv="_jmap._tcp", role="mail-access", preference=5),
            Listener("jmap", "jmaps", 8443, tls="implicit")]


def jmap_clients(reach: Reach) -> list[str]:
    return [f"jmap-client {reach.user}@{reach.domain} {reach.host}:{reach.listener.port}"]


@pytest.fixture
def jmap(monkeypatch):
    package = types.ModuleType("services.jmap", "JMAP: mail over HTTP (a stand-in package).")
    package.Settings, package.listeners, package.clients = JMAPSettings, jmap_listeners, jmap_clients
    monkeypatch.setitem(sys.modules, "services.jmap", package)
    monkeypatch.setattr(registry, "PROTOCOLS", (*registry.PROTOCOLS, "jmap"))
    return package


def test_a_new_package_has_its_srv_record_and_lookups(jmap):
    from services.dns.zone import build, name

    config = config_module.default()
    assert isinstance(config.service("jmap"), JMAPSettings)
    assert registry.listener(config, "jmap", "jmaps", 3000).port == 11443
    assert [item.name for item in registry.every_listener(config)][-2:] == ["jmap", "jmaps"]
    zone = build(config, 3000, [], 1)
    srv = [rr.rdata for rrs in zone.records[name("_jmap._tcp.lab.test")].values() for rr in rrs]
    assert [(s.priority, s.port, str(s.target)) for s in srv] == [(5, 11080, "mail.lab.test.")]
    assert config.hosts_with_role("mail-access") == ["pop3", "imap", "mail"]  # table order
    assert config.hosts_with_role("nameserver") == ["ns"]  # DHCP hands its address out


def test_a_new_package_is_on_the_portal_and_in_the_autoconfig(jmap):
    from services.http.autoconfig import document
    from services.http.labinfo import ServiceInfo

    config = config_module.default()
    infos = [ServiceInfo(name=n, summary="", enabled=True, running=True, host="mail.lab.test",
                         aliases=[], address="10.0.0.5", address6="",
                         listeners=registry.listeners(config, n, 3000))
             for n in registry.names() if n in ("imap", "pop3", "jmap")]
    jmap_info = infos[-1]
    plain, tls = jmap_info.listeners
    assert jmap_info.clients(plain, "alice", "lab.test") == \
        ["jmap-client alice@lab.test mail.lab.test:11080"]
    del jmap.clients  # no hints of its own: the portal's default line
    assert jmap_info.clients(tls, "alice", "lab.test") == \
        ["openssl s_client -connect mail.lab.test:11443 -CAfile ca.crt"]
    incoming = [(s.get("type"), s.findtext("port"))
                for s in ET.fromstring(document("lab.test", infos)).iter("incomingServer")]
    # its preference 5 puts it between IMAP (0) and POP3 (10)
    assert incoming == [("imap", "3993"), ("imap", "3143"), ("jmap", "11080"),
                        ("pop3", "3995"), ("pop3", "3110")]


def test_one_port_offset_rule():
    assert port_offset(5, 7, 9) == (5, "as asked")
    assert port_offset(None, 7, 9) == (7, "[lab] port_offset")
    assert port_offset(None, -1, 9) == (9, "the running lab's")
    assert port_offset(None)[0] in (0, 3000)
