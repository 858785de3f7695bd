"""A class's teams (issue 16, part 1): each team's mail domain in DNS and in SMTP, a
catch-all for the team, and a shared folder only its members reach over SMB and FTP. All
of it from the store's roster, seen by the running lab within its poll."""

from __future__ import annotations

import ftplib
import imaplib
import subprocess
import time

import pytest

from services import config as config_module
from services.dns.zone import build, name
from tests.conftest import need
from tests.ftputil import ftp_login, get, put, smbclient

ROSTER = "name,team,password\nstu1,team01,pw-one-1\nstu2,team01,pw-two-2\nstu3,team02,pw-three\n"


def until(probe, what: str, timeout: float = 10):
    """Ask `probe()` again until it gives something true (the store's poll is ~0.2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result or time.monotonic() > deadline:
            assert result, what
            return result
        time.sleep(0.05)


def test_a_team_domain_has_the_lab_domains_mx_srv_and_autoconfig():
    config = config_module.default()
    zone = build(config, 0, [], 1, ["team07"])
    records = zone.records
    team = name("team07.lab.test")
    assert {str(rr.rdata) for rr in records[team][15]} == {"10 mail.lab.test."}
    srv = records[name("_imap._tcp.team07.lab.test")][33]
    assert [str(rr.rdata) for rr in srv] == [
        str(rr.rdata) for rr in records[name("_imap._tcp.lab.test")][33]]
    assert records[name("autoconfig.team07.lab.test")][5]  # a CNAME to the web host
    assert name("team08.lab.test") not in records
    assert name("team07.lab.test") not in build(config, 0, [], 1).records


def dig(server, question: str, qtype: str) -> str:
    return subprocess.run(["dig", "+short", "@127.0.0.1", "-p", str(server.port("dns", "dns")),
                           question, qtype], capture_output=True, text=True, timeout=30).stdout


def swaks(server, to: str) -> subprocess.CompletedProcess:
    return subprocess.run(["swaks", "--server", "127.0.0.1", "--port",
                           str(server.port("smtp", "smtp")), "--from", "teacher@lab.test",
                           "--to", to, "--body", f"for {to}"],
                          capture_output=True, text=True, timeout=60)


def inbox(server, user: str, password: str) -> int:
    with imaplib.IMAP4("127.0.0.1", server.port("imap", "imap")) as client:
        client.login(user, password)
        count = client.select("INBOX", readonly=True)[1][0]
        assert count is not None
        return int(count)


def test_team_domains_come_and_go_with_the_roster_in_dns_and_smtp(lab, tmp_path):
    need("dig", "swaks")
    server = lab.start(only="dns,smtp,imap")
    assert dig(server, "team01.lab.test", "MX") == ""
    refused = swaks(server, "stu1@team01.lab.test")
    assert "554 5.7.1" in refused.stdout  # not a lab domain yet: relay denied
    roster = tmp_path / "roster.csv"
    roster.write_text(ROSTER)
    assert server.cli("class", "import", str(roster)).returncode == 0
    # the running DNS server rebuilds its zone within a poll
    until(lambda: "mail.lab.test." in dig(server, "team01.lab.test", "MX"), "team01's MX")
    assert dig(server, "_submission._tcp.team02.lab.test", "SRV").strip()
    assert dig(server, "autoconfig.team01.lab.test", "A").strip()
    # SMTP: a member at the team's domain is that member; any other name is the team's
    sent = swaks(server, "stu1@team01.lab.test")
    assert "250 2.0.0" in sent.stdout, sent.stdout
    assert inbox(server, "stu1", "pw-one-1") == 1 and inbox(server, "stu2", "pw-two-2") == 0
    sent = swaks(server, "everyone@team01.lab.test")
    assert "250 2.0.0" in sent.stdout, sent.stdout
    assert inbox(server, "stu1", "pw-one-1") == 2 and inbox(server, "stu2", "pw-two-2") == 1
    assert inbox(server, "stu3", "pw-three") == 0  # another team's catch-all is not theirs
    # the one identity rule: the team's address logs in too
    assert inbox(server, "stu3@team02.lab.test", "pw-three") == 0
    # team02 leaves the roster: its domain goes from DNS and from SMTP
    roster.write_text("stu1,team01,pw-one-1\nstu2,team01,pw-two-2\n")
    assert server.cli("class", "import", str(roster)).returncode == 0
    until(lambda: dig(server, "team02.lab.test", "MX") == "", "team02's MX gone")
    assert "554 5.7.1" in swaks(server, "x@team02.lab.test").stdout


def test_a_team_folder_is_its_members_only_over_smb_and_ftp(lab, tmp_path):
    need("smbclient")
    server = lab.start(only="ftp,smb")
    roster = tmp_path / "roster.csv"
    roster.write_text(ROSTER)
    assert server.cli("class", "import", str(roster)).returncode == 0
    # stu1 puts a file into the team's folder over FTP (/team01); stu2, same team, gets it
    # over SMB (share team01)
    ftp = ftp_login(server, "stu1", "pw-one-1")
    assert "team01" in ftp.nlst("/")
    put(ftp, "/team01/plan.txt", b"our plan\n")
    ftp.quit()
    (tmp_path / "got").mkdir()
    fetched = subprocess.run(
        ["smbclient", "//127.0.0.1/team01", "-p", str(server.port("smb", "smb")),
         "-U", "stu2%pw-two-2", "-c", f"lcd {tmp_path / 'got'}; get plan.txt"],
        capture_output=True, text=True, timeout=120)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert (tmp_path / "got" / "plan.txt").read_bytes() == b"our plan\n"
    # stu3 (team02) is denied team01's share over SMB...
    denied = smbclient(server, "team01", "ls", "stu3", "pw-three")
    assert denied.returncode != 0 and "NT_STATUS_ACCESS_DENIED" in denied.stdout + denied.stderr
    # ...and over FTP finds only their own team's folder: team01's is not in their tree
    ftp = ftp_login(server, "stu3", "pw-three")
    assert "team02" in ftp.nlst("/") and "team01" not in ftp.nlst("/")
    for path in ("/team01/plan.txt", "/team02/../team01/plan.txt", "../../teams/team01/plan.txt"):
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            get(ftp, path)
    ftp.quit()
    # the share list (srvsvc) shows a member their team's share, and no other team's
    def shares(user: str, password: str) -> str:
        return subprocess.run(["smbclient", "-L", "//127.0.0.1", "-p",
                               str(server.port("smb", "smb")), "-U", f"{user}%{password}"],
                              capture_output=True, text=True, timeout=120).stdout

    assert "team01" in shares("stu2", "pw-two-2") and "team01" not in shares("stu3", "pw-three")


def test_a_team_folder_over_http_is_its_members_only_and_its_autoconfig_names_its_domain(
        lab, tmp_path):
    need("curl")
    server = lab.start(only="http,ftp")
    http = f"http://127.0.0.1:{server.port('http', 'http')}"

    def curl(*args: str) -> tuple[int, str]:
        done = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        body, _, code = done.stdout.rpartition("\n")
        return int(code), body

    assert curl(f"{http}/~team01/")[0] == 404  # no such team (nor user) yet
    roster = tmp_path / "roster.csv"
    roster.write_text(ROSTER)
    assert server.cli("class", "import", str(roster)).returncode == 0
    # stu1 puts a file into team01's folder over HTTP; stu2 (team01) reads it over FTP and
    # HTTP: the same folder as FTP's /team01
    until(lambda: curl("-u", "stu1:pw-one-1", "-T", "-", f"{http}/~team01/plan.txt")[0] == 201,
          "team01's folder over HTTP")
    ftp = ftp_login(server, "stu2", "pw-two-2")
    assert get(ftp, "/team01/plan.txt") == b""
    ftp.quit()
    assert curl("-u", "stu2:pw-two-2", f"{http}/~team01/plan.txt") == (200, "")
    assert "plan.txt" in curl("-u", "stu2:pw-two-2", f"{http}/~team01/")[1]
    # nobody else: no login is asked for one (401), another team's member is refused
    assert curl(f"{http}/~team01/plan.txt")[0] == 401
    assert curl("-u", "stu3:pw-three", f"{http}/~team01/plan.txt")[0] == 403
    assert curl("-u", "stu3:pw-three", f"{http}/~team01/")[0] == 403
    assert curl("-u", "stu3:pw-three", "-T", "-", f"{http}/~team01/x.txt")[0] == 403
    assert curl("-u", "stu1:wrong", f"{http}/~team01/plan.txt")[0] == 401
    assert curl("-u", "stu3:pw-three", f"{http}/~team02/../team01/plan.txt",
                "--path-as-is")[0] in (403, 404)
    assert curl("-u", "stu3:pw-three", f"{http}/~team02/")[0] == 200  # their own
    # Thunderbird's wizard for a member's address gets the team's domain, the lab's hosts
    xml = "/mail/config-v1.1.xml"
    assert "<domain>team01.lab.test</domain>" in curl(
        "-H", "Host: autoconfig.team01.lab.test", http + xml)[1]
    assert "<domain>team02.lab.test</domain>" in curl(
        f"{http}{xml}?emailaddress=stu3%40team02.lab.test")[1]
    lab_own = curl("-H", "Host: autoconfig.lab.test", http + xml)[1]
    assert "<domain>lab.test</domain>" in lab_own and "team0" not in lab_own
    assert "<domain>lab.test</domain>" in curl("-H", "Host: autoconfig.team09.lab.test",
                                               http + xml)[1]  # no such team
