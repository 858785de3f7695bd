"""`protolab hosts`: hosts-file lines for every lab name, read back by a real resolver."""

from __future__ import annotations

from services import config as config_module
from services import hosts


def test_every_zone_host_gets_a_line_and_the_lab_address_can_be_replaced(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text('[lab]\ndomain = "class.test"\n[hosts]\nprinter = "10.1.2.3"\n')
    config = config_module.load(path, {})
    items = hosts.entries(config, [("pc1.class.test", "10.199.0.50")], address="192.0.2.7")
    names = dict((n, a) for a, n in items)
    for host in config.host_names():
        assert f"{host}.class.test" in names
    assert names["www.class.test"] == "192.0.2.7"  # the lab's own address, replaced
    assert names["printer.class.test"] == "10.1.2.3"  # a host of its own keeps its address
    assert names["pc1.class.test"] == "10.199.0.50"  # a lease's name
    text = hosts.render(config, items)
    assert text.startswith("# protolab") and text.endswith("# end of protolab class.test\n")
    body = [line.split() for line in text.splitlines() if not line.startswith("#")]
    assert all(len(fields) == 2 for fields in body)  # one name per line


def test_the_lab_machine_gets_the_ipv6_lines_too(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text('[lab]\ndomain = "class.test"\naddress6 = "fd00:203::1"\n'
                    '[hosts]\nprinter = "10.1.2.3"\n')
    config = config_module.load(path, {})
    items = hosts.entries(config, [("pc1.class.test", "10.199.0.50"),
                                   ("pc1.class.test", "fd00:203::1001")])
    assert ("127.0.0.1", "www.class.test") in items and ("fd00:203::1", "www.class.test") in items
    assert ("fd00:203::1001", "pc1.class.test") in items  # a DHCPv6 lease's AAAA
    assert not any(n == "printer.class.test" and ":" in a for a, n in items)  # v4 of its own
    elsewhere = hosts.entries(config, address="192.0.2.7")  # a student's laptop: the LAN address
    assert not any(":" in a for a, _ in elsewhere)
