"""[dns] and [dhcp] settings: bad values are one-line errors naming the key; DHCP without an
interface is off, and says so in the table and in `protolab check`."""

from __future__ import annotations

import pytest

from services import config as config_module
from services.config import ConfigError


@pytest.mark.parametrize("text, key", [
    ('[dhcp]\nrange = "10.0.0.9-10.0.0.1"', "range"),
    ('[dhcp]\nrange = "10.0.0.1"', "range"),
    ('[dhcp]\nlease_time = 5', "lease_time"),
    ('[dhcp]\nrouter = "gateway"', "router"),
    ('[dhcp]\nreservations = { "52:54:00:zz:00:01" = "10.0.0.5" }', "reservations"),
    ('[dhcp]\nreservations = { "52:54:00:00:00:01" = "nowhere" }', "reservations"),
    ('[dns]\nforwarders = ["8.8.8.8#99999"]', "forwarders"),
    ('[dns]\nforwarders = ["resolver"]', "forwarders"),
    ('[dns]\naxfr_clients = ["10.0.0.0/33"]', "axfr_clients"),
    ('[dns]\nroot_address = "::1"', "root_address"),
    ('[dhcp]\nipv6_prefix = "fd00:203::/48"', "ipv6_prefix"),
    ('[dhcp]\nipv6_prefix = "10.0.0.0/24"', "ipv6_prefix"),
    ('[dhcp]\nipv6_prefix = "fd00:203::1/64"', "ipv6_prefix"),
])
def test_bad_settings_name_the_key(tmp_path, text, key):
    path = tmp_path / "lab.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        config_module.load(path)
    assert f"{key}:" in str(error.value) and str(error.value).startswith(str(path))
    assert "\n" not in str(error.value)


def test_good_settings_load(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text('[dhcp]\ninterface = "br0"\nrange = "10.0.0.100-10.0.0.150"\n'
                    'reservations = { "52:54:00:00:00:01" = "10.0.0.5" }\n'
                    '[dns]\nforwarders = ["127.0.0.1#5353", "::1"]\n')
    config = config_module.load(path)
    assert config.service("dhcp").reservations == {"52:54:00:00:00:01": "10.0.0.5"}
    assert config.service("dns").forwarders == ["127.0.0.1#5353", "::1"]


def test_ipv6_is_documented_and_listed(tmp_path):
    text = config_module.example()
    for key in ("ipv6_prefix", "ra_managed", "ra_other"):
        assert f"# {key} = " in text or f"{key} = " in text, key
    path = tmp_path / "lab.toml"
    path.write_text('[dhcp]\ninterface = "br0"\nipv6_prefix = "fd00:203::/64"\nra_managed = false\n')
    config = config_module.load(path)
    from services.dhcp import listeners

    rows = {row.name: row for row in listeners(config)}
    assert rows["dhcpv6"].port == 547 and "fd00:203::/64" in rows["dhcpv6"].note
    assert config.service("dhcp").ra_managed is False and config.service("dhcp").ra_other is True


def test_ipv6_on_an_interface_without_an_address_in_the_prefix_is_a_start_error(lab):
    with pytest.raises(AssertionError) as error:
        lab.start(only="dhcp", config='[dhcp]\ninterface = "lo"\nipv6_prefix = "fd00:203::/64"\n',
                  timeout=20)
    assert "dhcp: cannot start IPv6 on lo: interface lo has no address in fd00:203::/64" in \
        str(error.value)


def test_dhcp_is_off_without_an_interface(lab):
    server = lab.start(only="dhcp")
    assert any("off: set [dhcp] interface" in line for line in server.output)
    check = server.check()
    assert check.returncode == 0 and "off (set [dhcp] interface)" in check.stdout


def test_dhcp_on_a_missing_interface_is_a_one_line_start_error(lab, tmp_path):
    with pytest.raises(AssertionError) as error:
        lab.start(only="dhcp", config='[dhcp]\ninterface = "nosuchif0"\n', timeout=20)
    assert "dhcp: cannot start: interface nosuchif0" in str(error.value)
