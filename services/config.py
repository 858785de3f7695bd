"""Lab configuration: TOML -> validated, typed settings, and the embedded default lab.

Settings are dataclasses whose fields are made with `setting(default, doc)`, so one
declaration gives the default, the type the loader checks and the text `protolab init`
writes. Each protocol package declares its own section (its `Settings` class); this module
only knows the sections every service shares.

We validate by hand rather than with pydantic: it keeps start-up fast (the 1 s budget) and
lets every error name the file, the [section] and the key in TOML's own terms.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import json
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration problem, said in one line: file, key, what is wrong."""


class Invalid(ValueError):
    """Raised by a settings class's validate(): names the key and what is wrong with it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def setting(default: Any, doc: str) -> Any:
    """A settings field: its default and the one-line doc `protolab init` writes above it."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


HOST_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
DOMAIN_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")


USER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
RESERVED_NAMES = {"public"}  # share and folder names the lab uses for itself


def check_name(name: str, key: str = "name") -> None:
    """A lab user name: what [[users]], the store and every protocol's settings accept."""
    if not USER_NAME_RE.match(name) or name in RESERVED_NAMES:
        raise Invalid(
            key,
            f"{name!r} is not a valid user name (1-32 of a-z 0-9 . _ -, starting with a letter "
            f"or digit; not {', '.join(sorted(RESERVED_NAMES))})",
        )


def check_address(key: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise Invalid(key, f"{value!r} is not an IP address") from None


@dataclass
class LabSettings:
    domain: str = setting("lab.test", "the lab's DNS domain: every service host is HOST.DOMAIN")
    address: str = setting(
        "127.0.0.1", "the address the lab zone gives every host that [hosts] does not list"
    )
    address6: str = setting(
        "::1", "the IPv6 address (AAAA) the lab zone gives every host that [hosts] does not "
        "list; \"\" = no AAAA records (nor are there with a loopback address6 when address "
        "is not loopback)")
    bind: str = setting(
        "::", "the address every service listens on (serve --bind overrides): :: is every "
        "address of both IPv4 and IPv6 (IPv4 only where the host has no IPv6), 0.0.0.0 every "
        "IPv4 address, or one address of either family")
    port_offset: int = setting(
        -1,
        "added to every port the lab listens on; -1 = automatic: 0 when the process may bind "
        "ports below 1024, else 3000 (serve --port-offset overrides)",
    )
    max_connections: int = setting(
        500, "open connections each TCP service (HTTP, SMTP, POP3, IMAP, DNS) accepts at "
        "once, over all its ports; beyond it a client gets the protocol's busy reply "
        "(SMTP 421, POP3 -ERR, IMAP BYE, HTTP 503) and a close; 0 = no limit")
    max_connections_per_peer: int = setting(
        50, "open connections one client address may hold to each of those services; "
        "0 = no limit")
    ttl: int = setting(
        60, "TTL of the lab's names: every record of its zones (DHCP clients' too), and of "
        "negative answers")

    def validate(self) -> None:
        if not DOMAIN_RE.match(self.domain):
            raise Invalid("domain", f"{self.domain!r} is not a DNS domain name")
        check_address("address", self.address)
        check_address("bind", self.bind)
        if self.address6:
            check_address("address6", self.address6)
            if ipaddress.ip_address(self.address6).version != 6:
                raise Invalid("address6", f"{self.address6!r} is not an IPv6 address")
        if not -1 <= self.port_offset <= 60000:
            raise Invalid("port_offset", "must be -1 (automatic) or 0..60000")
        for key in ("max_connections", "max_connections_per_peer"):
            if getattr(self, key) < 0:
                raise Invalid(key, "must not be negative (0 = no limit)")
        if not 0 <= self.ttl <= 2**31 - 1:
            raise Invalid("ttl", "must be 0..2147483647")


@dataclass
class UserSeed:
    name: str = setting("", "login name (lower case letters, digits, '.', '_' and '-')")
    password: str = setting("", "the password, used only when the user is first created")

    def validate(self) -> None:
        check_name(self.name, key="name")
        if not self.password:
            raise Invalid("password", "must not be empty")


@dataclass
class AuthSettings:
    keep_plaintext: bool = setting(
        False,
        "also keep passwords in clear in the store, which POP3 APOP and CRAM-MD5 need; "
        "those mechanisms are offered only when this is on",
    )


@dataclass
class ApiSettings:
    admin_user: str = setting("admin", "user name of the API and dashboard administrator")
    admin_password: str = setting("admin", "password of the API and dashboard administrator")


@dataclass
class TLSSettings:
    keylog: str = setting(
        "",
        "append every TLS session's secrets to this file in NSS key log format, so Wireshark "
        "can decrypt captures (Preferences > Protocols > TLS); empty = off",
    )
    extra_names: list[str] = setting(
        [], "more DNS names and IP addresses for the lab's server certificate"
    )


@dataclass
class JournalSettings:
    show_secrets: bool = setting(
        False, "write passwords and other secrets into the journal instead of masking them"
    )
    recent: int = setting(2000, "how many recent events the store keeps for the dashboard and API")
    keep_days: int = setting(
        14, "day files of the journal kept (today's counts; 0: every one), pruned at start "
            "and at each new day")
    max_mb: int = setting(
        1024, "at most this many MB of past days' files (the oldest go first; today's stays; "
              "0: no cap), pruned at start and at each new day")

    def validate(self) -> None:
        for key in ("recent", "keep_days", "max_mb"):
            if getattr(self, key) < 0:
                raise Invalid(key, "must not be negative")


@dataclass
class ServiceSettings:
    """Base of every protocol's section: the keys all services share."""

    enabled: bool = setting(True, "serve this protocol when no --only is given")
    host: str = setting("", "this service's host name in the lab zone")
    aliases: list[str] = setting([], "more host names of this service in the lab zone")

    def validate(self) -> None:
        for key, names in (("host", [self.host] if self.host else []), ("aliases", self.aliases)):
            for name in names:
                if not HOST_RE.match(name):
                    raise Invalid(key, f"{name!r} is not a host name (letters, digits, '-')")


def default_users() -> list[UserSeed]:
    return [UserSeed("alice", "alice"), UserSeed("bob", "bob")]


@dataclass
class LabConfig:
    lab: LabSettings = field(default_factory=LabSettings)
    hosts: dict[str, str] = field(default_factory=dict)
    users: list[UserSeed] = field(default_factory=default_users)
    auth: AuthSettings = field(default_factory=AuthSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    tls: TLSSettings = field(default_factory=TLSSettings)
    journal: JournalSettings = field(default_factory=JournalSettings)
    services: dict[str, ServiceSettings] = field(default_factory=dict)
    source: str = "the embedded default lab"

    def service(self, name: str) -> Any:
        """The [name] section of a registered protocol (its own Settings class)."""
        return self.services[name]

    def host_names(self) -> dict[str, str]:
        """Every host of the lab zone (short name -> address), services' hosts first."""
        names: dict[str, str] = {}
        for settings in self.services.values():
            for host in [settings.host, *settings.aliases]:
                if host:
                    names.setdefault(host, self.lab.address)
        for host, address in self.hosts.items():
            names[host] = address
        return names

    def address6(self) -> str:
        """[lab] address6, unless it is loopback (the default ::1) while [lab] address is
        not (a lab moved onto a network, `protolab net up`): an AAAA of ::1 would send the
        network's hosts to themselves."""
        address6 = self.lab.address6
        if address6 and ipaddress.ip_address(address6).is_loopback and \
                not ipaddress.ip_address(self.lab.address).is_loopback:
            return ""
        return address6

    def host_names6(self) -> dict[str, str]:
        """The hosts of the lab zone that have an IPv6 address (short name -> address):
        every host at [lab] address6 (when set), unless [hosts] gives it its address."""
        address6 = self.address6()
        names = {host: address6 for host in self.host_names()
                 if host not in self.hosts and address6}
        names.update((host, address) for host, address in self.hosts.items() if ":" in address)
        return names

    def fqdn(self, host: str) -> str:
        return f"{host}.{self.lab.domain}"

    def host_of(self, service: str) -> str:
        """A service's host name in the lab zone ("" when it has none). The keys every
        section shares (host, aliases, enabled) are the lab's: any part may read them."""
        settings = self.services.get(service)
        return settings.host if settings is not None else ""

    def hosts_with_role(self, role: str) -> list[str]:
        """The hosts of the services that have a listener of `role` (listeners.ROLES), in
        table order: how one protocol finds another's host without naming it."""
        from . import registry

        found: list[str] = []
        for listener in registry.every_listener(self):
            host = self.host_of(listener.service)
            if listener.role == role and host and host not in found:
                found.append(host)
        return found

    def mail_domains(self) -> set[str]:
        """The domains whose addresses are the lab's users (lower case): the lab's own, its
        hosts' names (alice@mail.lab.test) and any service's extra `domains` ([smtp]
        domains). Mail to them is local, and a login as NAME@one-of-them is NAME. These are
        the static ones: a class team's domain (TEAM.DOMAIN) comes and goes with the store's
        roster (store.roster.domains), which SMTP and the identity rule ask as well."""
        names = {self.lab.domain, *(self.fqdn(host) for host in self.host_names())}
        for settings in self.services.values():
            names.update(getattr(settings, "domains", ()))
        return {name.lower().rstrip(".") for name in names}


# Sections besides the protocols' own, with their docs for `protolab init`.
SECTIONS: dict[str, tuple[type, str]] = {
    "lab": (LabSettings, "The lab as a whole."),
    "auth": (AuthSettings, "How passwords are kept."),
    "api": (ApiSettings, "The HTTP API and dashboard (/api/v1, /lab/dashboard)."),
    "tls": (TLSSettings, "TLS for every service: the lab CA is DATA/tls/ca.crt."),
    "journal": (JournalSettings, "The journal of sessions, commands and replies (DATA/journal/)."),
}


def default() -> LabConfig:
    """The embedded default lab: lab.test, alice/alice and bob/bob, every protocol's defaults."""
    from . import registry

    config = LabConfig()
    for name in registry.names():
        config.services[name] = registry.module(name).Settings()
    return config


def load(path: Path | None, environ: Mapping[str, str] | None = None) -> LabConfig:
    """The default lab overridden key by key by the TOML file at `path` (if any), then by
    the environment variables of `environment()` (default: this process's)."""
    config = _load_file(path)
    environ = os.environ if environ is None else environ
    overrides = environment(environ)
    if overrides:
        names = ", ".join(name for name in sorted(environ) if _is_override(name))
        apply(config, overrides, f"the environment ({names})")
        config.source += f" + the environment ({names})"
    return config


ENV_PREFIX = "PROTOLAB_"


def _is_override(name: str) -> bool:
    return name in (f"{ENV_PREFIX}DOMAIN", f"{ENV_PREFIX}USERS") or name.startswith(
        f"{ENV_PREFIX}_")


def environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Config overrides from environment variables, as parsed TOML data for apply(), for
    containers whose config file a CI system cannot write:

        PROTOLAB_DOMAIN=example.test            [lab] domain
        PROTOLAB_USERS=alice:pw1,bob:pw2        [[users]] (replaces the list; no ',' in a
                                                password, which may hold ':')
        PROTOLAB__SECTION__KEY=VALUE            [SECTION] KEY = VALUE, VALUE read as a TOML
                                                value (true, 30000, ["a"], "007"), a bare
                                                word that is no TOML value as a string
    """
    data: dict[str, Any] = {}
    for name, value in environ.items():
        if name == f"{ENV_PREFIX}DOMAIN":
            data.setdefault("lab", {})["domain"] = value
        elif name == f"{ENV_PREFIX}USERS":
            users = []
            for item in filter(None, (part.strip() for part in value.split(","))):
                user, sep, password = item.partition(":")
                if not sep:
                    raise ConfigError(f"{name}: {user!r} has no password (NAME:PASSWORD,...)")
                users.append({"name": user, "password": password})
            data["users"] = users
        elif name.startswith(f"{ENV_PREFIX}_"):
            section, sep, key = name[len(ENV_PREFIX) + 1:].partition("__")
            if not (section and sep and key):
                raise ConfigError(f"{name}: expected {ENV_PREFIX}_SECTION__KEY")
            try:
                parsed = tomllib.loads(f"value = {value}")["value"]
            except tomllib.TOMLDecodeError:
                parsed = value
            data.setdefault(section.lower(), {})[key.lower()] = parsed
    return data


def _load_file(path: Path | None) -> LabConfig:
    config = default()
    if path is None:
        return config
    label = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"{label}: cannot read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{label}: invalid TOML: {error}") from None
    config.source = label
    apply(config, data, label)
    return config


def apply(config: LabConfig, data: dict[str, Any], label: str) -> None:
    """Override `config` with the parsed TOML `data`; every error names `label`."""
    for section, value in data.items():
        where = f"{label}: [{section}]"
        if section == "hosts":
            config.hosts = _convert(value, dict[str, str], where)
            for host, address in config.hosts.items():
                if not HOST_RE.match(host):
                    raise ConfigError(f"{where} {host}: not a host name (letters, digits, '-')")
                try:
                    check_address(host, address)
                except Invalid as error:
                    raise ConfigError(f"{where} {error}") from None
        elif section == "users":
            if not isinstance(value, list):
                raise ConfigError(f"{where}: expected [[users]] tables, got {_kind(value)}")
            config.users = [
                _merge(UserSeed(), item, f"{label}: [[users]] #{index}")
                for index, item in enumerate(value, 1)
            ]
            seen: set[str] = set()
            for user in config.users:
                if user.name in seen:
                    raise ConfigError(f"{where}: user {user.name!r} is listed twice")
                seen.add(user.name)
        elif section in SECTIONS:
            setattr(config, section, _merge(getattr(config, section), value, where))
        elif section in config.services:
            config.services[section] = _merge(config.services[section], value, where)
        else:
            known = ", ".join(sorted(["hosts", "users", *SECTIONS, *config.services]))
            raise ConfigError(f"{label}: [{section}]: unknown section (known: {known})")


# Keys that moved between sections: an old lab.toml is told where its key went.
MOVED = {"[dns] ttl": "[lab] ttl"}


def _merge(base: Any, data: Any, where: str) -> Any:
    """A copy of dataclass instance `base` with the keys of table `data` replaced."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table, got {_kind(data)}")
    hints = typing.get_type_hints(type(base))
    fields = {f.name for f in dataclasses.fields(base)}
    changes = {}
    for key, value in data.items():
        if key not in fields:
            moved = MOVED.get(f"{where.rsplit(': ', 1)[-1]} {key}")
            if moved:
                raise ConfigError(f"{where} {key}: moved to {moved}")
            raise ConfigError(f"{where} {key}: unknown key (known: {', '.join(sorted(fields))})")
        changes[key] = _convert(value, hints[key], f"{where} {key}")
        if isinstance(changes[key], int) and key.endswith("port") and not 0 < changes[key] < 65536:
            raise ConfigError(f"{where} {key}: {changes[key]} is not a port number (1-65535)")
    result = dataclasses.replace(base, **changes)
    validate = getattr(result, "validate", None)
    if validate is not None:
        try:
            validate()
        except Invalid as error:
            raise ConfigError(f"{where} {error}") from None
    return result


def _convert(value: Any, kind: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin is list:
        (item_kind,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {_kind(value)}")
        return [_convert(item, item_kind, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        _, item_kind = typing.get_args(kind)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {_kind(value)}")
        return {k: _convert(v, item_kind, f"{where}.{k}") for k, v in value.items()}
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - a settings class declared a type the loader does not know
        raise TypeError(f"{where}: unsupported settings type {kind!r}")
    if not ok:
        raise ConfigError(f"{where}: expected {_NAMES[kind]}, got {_kind(value)}")
    return value


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _kind(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"),
                       (str, "a string"), (list, "a list"), (dict, "a table")):
        if isinstance(value, kind):
            return f"{name} ({_toml(value)})" if kind in (bool, int, float, str) else name
    return type(value).__name__


def _toml(value: Any) -> str:
    """One TOML value, as `protolab init` writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def _section_lines(name: str, instance: Any, header: str) -> list[str]:
    lines = [header]
    for f in dataclasses.fields(instance):
        lines.append(f"# {f.metadata.get('doc', '')}")
        lines.append(f"{f.name} = {_toml(getattr(instance, f.name))}")
    return lines


def example(config: LabConfig | None = None) -> str:
    """A commented lab.toml documenting every key, with the defaults as values."""
    from . import registry

    config = config or default()
    out = [
        "# protolab lab configuration.",
        "# Every key is shown with its default; delete what you do not change.",
        "# Unknown keys are errors. Docs: README.md, section 'Configuration'.",
        "",
    ]
    for name, (_, doc) in SECTIONS.items():
        out += [f"# {doc}", *_section_lines(name, getattr(config, name), f"[{name}]"), ""]
    out += [
        "# Hosts of the lab zone: NAME = \"ADDRESS\". Every service's host and aliases are in",
        "# the zone at [lab] address unless listed here (one container per service lists each).",
        "[hosts]",
        *(f"# {host} = {_toml(address)}" for host, address in config.host_names().items()),
        "",
        "# Users created when the lab first starts (later changes: protolab user ...).",
    ]
    for user in config.users:
        out += [*_section_lines("users", user, "[[users]]"), ""]
    for name in registry.names():
        doc = (registry.module(name).__doc__ or name).strip().splitlines()[0]
        out += [f"# {doc}", *_section_lines(name, config.services[name], f"[{name}]"), ""]
    return "\n".join(out)
