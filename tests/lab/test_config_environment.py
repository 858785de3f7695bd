"""Settings from environment variables (config.environment), for containers whose command
line and files a CI system cannot set: PROTOLAB_DOMAIN, PROTOLAB_USERS, PROTOLAB__S__K."""

from __future__ import annotations

import json

import pytest

from services import config
from tests.conftest import cli


def test_domain_and_users_override_the_file(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text('[lab]\ndomain = "file.test"\n[[users]]\nname = "zed"\npassword = "z"\n')
    loaded = config.load(path, {"PROTOLAB_DOMAIN": "env.test",
                                "PROTOLAB_USERS": "carol:se:cret, dave:d,"})
    assert loaded.lab.domain == "env.test"
    assert [(u.name, u.password) for u in loaded.users] == [("carol", "se:cret"), ("dave", "d")]
    assert "PROTOLAB_DOMAIN" in loaded.source and str(path) in loaded.source


def test_any_key_as_a_toml_value_or_a_bare_word():
    loaded = config.load(None, {"PROTOLAB__lab__port_offset": "5",
                                "PROTOLAB__LAB__ADDRESS": "10.1.2.3",
                                "PROTOLAB__tls__extra_names": '["a.test", "10.0.0.9"]',
                                "PROTOLAB__hosts__printer": '"10.1.2.4"'})
    assert loaded.lab.port_offset == 5
    assert loaded.lab.address == "10.1.2.3"
    assert loaded.tls.extra_names == ["a.test", "10.0.0.9"]
    assert loaded.host_names()["printer"] == "10.1.2.4"


def test_unrelated_variables_leave_the_default_alone():
    loaded = config.load(None, {"PROTOLAB_ONLY": "dns", "PROTOLAB_DATA": "/x", "HOME": "/"})
    assert loaded.lab.domain == "lab.test" and loaded.source == "the embedded default lab"


@pytest.mark.parametrize("environ, message", [
    ({"PROTOLAB_USERS": "alice"}, "PROTOLAB_USERS: 'alice' has no password"),
    ({"PROTOLAB_DOMAIN": "not a domain"}, "PROTOLAB_DOMAIN"),
    ({"PROTOLAB__lab__nonsense": "1"}, "nonsense: unknown key"),
    ({"PROTOLAB__nosection__key": "1"}, "[nosection]: unknown section"),
    ({"PROTOLAB__lab": "1"}, "expected PROTOLAB__SECTION__KEY"),
    ({"PROTOLAB__lab__port_offset": "many"}, "port_offset: expected an integer"),
])
def test_bad_values_are_one_line_errors_naming_the_variable(environ, message):
    with pytest.raises(config.ConfigError) as caught:
        config.load(None, environ)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_cli_reads_them(tmp_path):
    data = tmp_path / "data"
    added = cli("user", "add", "frank", "--password", "f", data=data,
                env={"PROTOLAB_USERS": "erin:e"})
    assert added.returncode == 0, added.stderr
    listed = cli("user", "list", "--json", data=data, env={"PROTOLAB_USERS": "erin:e"})
    assert [user["name"] for user in json.loads(listed.stdout)] == ["erin", "frank"]
    bad = cli("check", env={"PROTOLAB_USERS": "nobody"})
    assert bad.returncode == 2 and bad.stderr.startswith("protolab: PROTOLAB_USERS")
