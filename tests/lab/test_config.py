"""Config: the embedded default, key-by-key overrides, and one-line errors naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from services import config as cfg


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return path


def test_embedded_default_lab():
    config = cfg.load(None)
    assert config.lab.domain == "lab.test"
    assert [(u.name, u.password) for u in config.users] == [("alice", "alice"), ("bob", "bob")]
    assert config.api.admin_user and config.api.admin_password
    assert config.source == "the embedded default lab"


def test_override_is_key_by_key(tmp_path):
    config = cfg.load(write(tmp_path, '[lab]\ndomain = "school.test"\n'))
    assert config.lab.domain == "school.test"
    assert config.lab.address == "127.0.0.1"  # untouched keys keep their defaults
    assert [u.name for u in config.users] == ["alice", "bob"]


def test_users_and_hosts(tmp_path):
    config = cfg.load(write(tmp_path, (
        '[hosts]\nrouter = "10.0.0.1"\n'
        '[[users]]\nname = "carol"\npassword = "pw"\n')))
    assert [u.name for u in config.users] == ["carol"]
    assert config.host_names()["router"] == "10.0.0.1"
    assert config.fqdn("router") == "router.lab.test"


def test_example_documents_every_key_and_loads_back_to_the_default(tmp_path):
    text = cfg.example()
    for name, (kind, _) in cfg.SECTIONS.items():
        for field in cfg.dataclasses.fields(kind):
            assert f"\n{field.name} = " in text, (name, field.name)
            assert field.metadata["doc"] in text
    loaded = cfg.load(write(tmp_path, text))
    default = cfg.default()
    assert loaded.lab == default.lab and loaded.users == default.users
    assert loaded.services == default.services and loaded.tls == default.tls


@pytest.mark.parametrize("text, message", [
    ("[lab\n", "invalid TOML"),
    ("[nosuch]\nx = 1\n", "[nosuch]: unknown section"),
    ("[lab]\ndomian = 'x.test'\n", "[lab] domian: unknown key"),
    ("[dns]\nttl = 60\n", "[dns] ttl: moved to [lab] ttl"),
    ("[lab]\nport_offset = 'big'\n", "[lab] port_offset: expected an integer, got a string (\"big\")"),
    ("[lab]\nport_offset = true\n", "[lab] port_offset: expected an integer, got a boolean"),
    ("[lab]\ndomain = 'not a domain'\n", "[lab] domain: 'not a domain' is not a DNS domain name"),
    ("[lab]\naddress = '300.1.1.1'\n", "[lab] address: '300.1.1.1' is not an IP address"),
    ("[hosts]\nwww = 'nowhere'\n", "[hosts] www: 'nowhere' is not an IP address"),
    ("[hosts]\n'bad_name' = '10.0.0.1'\n", "[hosts] bad_name: not a host name"),
    ("[[users]]\nname = 'Bad Name'\npassword = 'x'\n", "[[users]] #1 name:"),
    ("[[users]]\nname = 'carol'\n", "[[users]] #1 password: must not be empty"),
    ("[[users]]\nname='a'\npassword='x'\n[[users]]\nname='a'\npassword='y'\n", "listed twice"),
    ("users = 3\n", "[users]: expected [[users]] tables"),
    ("[tls]\nextra_names = 'x'\n", "[tls] extra_names: expected a list"),
    ("[journal]\nrecent = -1\n", "[journal] recent: must not be negative"),
    ("[lab]\nmax_connections_per_peer = -5\n",
     "[lab] max_connections_per_peer: must not be negative (0 = no limit)"),
])
def test_errors_name_file_section_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(cfg.ConfigError) as raised:
        cfg.load(path)
    error = str(raised.value)
    assert error.startswith(str(path)), error
    assert message in error, error
    assert "\n" not in error


def test_unreadable_file(tmp_path):
    with pytest.raises(cfg.ConfigError, match="cannot read"):
        cfg.load(tmp_path / "missing.toml")
