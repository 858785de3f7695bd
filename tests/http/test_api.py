"""The JSON API (/api/v1) checked against its own OpenAPI document, the autoconfig XML,
and the admin dashboard, with http.client and curl."""

from __future__ import annotations

import base64
import http.client
import json
import time
import xml.etree.ElementTree as ET

import pytest

from services import registry
from services.store import Store
from tests.http.test_server import curl, running_web, status_of

MESSAGE = (b"From: Carol <carol@lab.test>\r\nTo: alice@lab.test\r\n"
           b"Subject: =?utf-8?q?caf=C3=A9?=\r\nMessage-ID: <1@lab.test>\r\n\r\nhello\r\n")


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    with running_web(tmp_path_factory, "api") as server:
        store = Store(server.data)  # another process on the same data directory, like SMTP
        store.mail.append("alice", "INBOX", MESSAGE)
        store.mail.append("alice", "INBOX", MESSAGE.replace(b"<1@", b"<2@"))
        store.net.add_record("pc1.lab.test", "A", "10.0.0.5", owner="manual")
        # a lease's record with no lease behind it (ended): the DNS does not answer it
        store.net.add_record("gone.lab.test", "A", "10.0.0.6", owner="lease:aa")
        # Folder becomes a \Noselect placeholder, as after IMAP DELETE of a mailbox with inferiors.
        store.mail.create_mailbox("alice", "Folder")
        store.mail.create_mailbox("alice", "Folder/Sub")
        store.mail.delete_mailbox("alice", "Folder")
        store.close()
        # a capture with no packets yet (a pcap's header alone), for /captures/export
        (server.data / "captures").mkdir()
        (server.data / "captures" / "empty.pcap").write_bytes(
            bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
        yield server


def call(server, method: str, path: str, auth: tuple[str, str] | None = ("admin", "admin"),
         body: object = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port("http", "http"), timeout=10)
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    connection.request(method, path, body=data, headers=headers)
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), payload


def as_json(server, method: str, path: str, **kwargs) -> tuple[int, object]:
    status, headers, payload = call(server, method, path, **kwargs)
    if status == 204:
        return status, None
    assert headers["Content-Type"].startswith("application/json"), (path, headers)
    return status, json.loads(payload)


def test_openapi_document_matches_the_served_routes(web):
    status, document = as_json(web, "GET", "/api/v1/openapi.json", auth=None)
    assert status == 200 and document["openapi"].startswith("3.")
    operations = [(method.upper(), path, op) for path, ops in document["paths"].items()
                  for method, op in ops.items()]
    assert len(operations) >= 14
    assert len({op["operationId"] for _, _, op in operations}) == len(operations)
    # Every documented GET answers 2xx with the documented type when called as documented.
    for method, path, op in operations:
        if method != "GET":
            continue
        concrete = path
        for parameter in op["parameters"]:
            if parameter["in"] == "path":
                concrete = concrete.replace(f"{{{parameter['name']}}}", str(parameter["example"]))
        status, headers, payload = call(web, "GET", "/api/v1" + concrete.rstrip("/") or "/")
        expected = next(iter(op["responses"]))
        assert str(status) == expected, (path, status, payload[:200])
        content_type = next(iter(op["responses"][expected]["content"]))
        assert headers["Content-Type"].startswith(content_type), path
        if op.get("x-access") != "public":  # documented as protected: refused without a login
            assert call(web, "GET", "/api/v1" + concrete, auth=None)[0] == 401, path
    # The other methods exist where documented and nowhere else.
    for _, path, _ in operations:
        allowed = {m.upper() for m in document["paths"][path]}
        concrete = path.replace("{user}", "nobody").replace("{mailbox}", "INBOX").replace(
            "{uid}", "99")
        status, headers, _ = call(web, "PATCH", "/api/v1" + concrete)
        assert status == 405 and set(headers["Allow"].split(", ")) == allowed - {"HEAD"}, path
    status, error = as_json(web, "GET", "/api/v1/no/such/route")
    assert status == 404 and set(error) == {"status", "message"} and error["status"] == 404


def test_users_created_listed_and_deleted_by_the_admin(web):
    status, created = as_json(web, "POST", "/api/v1/users", body={"name": "carol",
                                                                   "password": "carol"})
    assert status == 201 and created["name"] == "carol" and created["mailboxes"] == 6
    assert as_json(web, "POST", "/api/v1/users", body={"name": "carol", "password": "x"})[0] == 409
    assert as_json(web, "POST", "/api/v1/users", body={"name": "Bad Name!", "password": "x"})[0] == 400
    status, error = as_json(web, "POST", "/api/v1/users", body=["not", "an", "object"])
    assert status == 400 and "object" in error["message"]
    names = [u["name"] for u in as_json(web, "GET", "/api/v1/users")[1]]
    assert names == ["alice", "bob", "carol"]
    # carol may log in to the protected page at once: the same store.
    assert status_of(curl("-i", "-u", "carol:carol",
                          f"http://127.0.0.1:{web.port('http', 'http')}/lab/http/protected/"
                          ).stdout) == [200]
    assert as_json(web, "GET", "/api/v1/users", auth=("alice", "alice"))[0] == 403
    assert as_json(web, "DELETE", "/api/v1/users/carol", auth=("carol", "carol"))[0] == 403
    assert as_json(web, "DELETE", "/api/v1/users/carol")[0] == 204
    assert as_json(web, "DELETE", "/api/v1/users/carol")[0] == 404
    assert as_json(web, "GET", "/api/v1/users", auth=("admin", "wrong"))[0] == 401


def test_mail_as_the_owner_or_the_admin(web):
    status, boxes = as_json(web, "GET", "/api/v1/users/alice/mailboxes", auth=("alice", "alice"))
    inbox = next(b for b in boxes if b["name"] == "INBOX")
    assert status == 200 and inbox["messages"] >= 1 and not inbox["noselect"]
    folder = next(b for b in boxes if b["name"] == "Folder")
    assert folder["noselect"] and folder["messages"] == 0
    assert as_json(web, "GET", "/api/v1/users/alice/mailboxes/Folder/messages") == (200, [])
    status, messages = as_json(web, "GET", "/api/v1/users/alice/mailboxes/INBOX/messages",
                               auth=("alice", "alice"))
    assert messages[0]["headers"]["subject"] == "café"
    assert messages[0]["headers"]["from"] == "Carol <carol@lab.test>"
    uid = messages[-1]["uid"]
    status, headers, raw = call(web, "GET", f"/api/v1/users/alice/mailboxes/INBOX/messages/{uid}/raw",
                                auth=("alice", "alice"))
    assert status == 200 and headers["Content-Type"] == "message/rfc822"
    assert raw == MESSAGE.replace(b"<1@", b"<2@")
    assert as_json(web, "GET", "/api/v1/users/alice/mailboxes", auth=("bob", "bob"))[0] == 403
    assert as_json(web, "DELETE", f"/api/v1/users/alice/mailboxes/INBOX/messages/{uid}",
                   auth=("bob", "bob"))[0] == 403
    assert as_json(web, "DELETE", f"/api/v1/users/alice/mailboxes/INBOX/messages/{uid}",
                   auth=("alice", "alice"))[0] == 204
    status, error = as_json(web, "GET", f"/api/v1/users/alice/mailboxes/INBOX/messages/{uid}",
                            auth=("alice", "alice"))
    assert status == 404 and str(uid) in error["message"]
    assert as_json(web, "GET", "/api/v1/users/alice/mailboxes/Nope/messages")[0] == 404
    assert as_json(web, "GET", "/api/v1/users/alice/mailboxes/INBOX/messages/x")[0] == 400


def test_services_records_leases_and_journal(web):
    status, services = as_json(web, "GET", "/api/v1/services", auth=None)
    assert [s["name"] for s in services] == list(registry.names())
    mine = next(s for s in services if s["name"] == "http")
    assert mine["running"] and mine["host"] == "www.lab.test"
    assert {x["port"] for x in mine["listeners"]} == {web.port("http", "http"),
                                                       web.port("http", "https")}
    others = [s for s in services if s["name"] != "http"]
    assert not any(s["running"] for s in others)  # only http is served in this lab
    records = as_json(web, "GET", "/api/v1/dns/records", auth=None)[1]
    assert {"name": "pc1.lab.test", "type": "A", "value": "10.0.0.5", "ttl": 300,
            "owner": "manual"} in records
    assert not any(r["name"] == "gone.lab.test" for r in records)
    assert as_json(web, "GET", "/api/v1/leases", auth=None) == (200, [])
    start = time.time()
    call(web, "GET", "/lab/http/basic.html")
    status, events = as_json(web, "GET", f"/api/v1/journal?service=http&since={start}")
    assert status == 200 and all(e["service"] == "http" and e["ts"] > start for e in events)
    assert any(e["kind"] == "command" and e["text"] == "GET /lab/http/basic.html HTTP/1.1"
               for e in events)
    assert as_json(web, "GET", "/api/v1/journal?since=yesterday")[0] == 400


def test_autoconfig_describes_the_mail_services_present(web):
    for path in ("/.well-known/autoconfig/mail/config-v1.1.xml",
                 "/mail/config-v1.1.xml?emailaddress=alice%40lab.test"):
        answer = curl("-H", "Host: autoconfig.lab.test",
                      f"http://127.0.0.1:{web.port('http', 'http')}{path}").stdout
        root = ET.fromstring(answer)
        assert root.tag == "clientConfig" and root.get("version") == "1.1"
        provider = root.find("emailProvider")
        assert provider.findtext("domain") == "lab.test"
        kinds = {(s.tag, s.get("type")) for s in provider if s.tag.endswith("Server")}
        expected = {("incomingServer", n) for n in ("imap", "pop3") if n in registry.names()}
        expected |= {("outgoingServer", "smtp")} if "smtp" in registry.names() else set()
        assert kinds == expected
        for server in provider.iter("outgoingServer"):
            assert server.findtext("socketType") in ("SSL", "STARTTLS")
            assert int(server.findtext("port")) % 1000 != 25  # submission, not the relay port


def test_dashboard_for_the_admin_only(web):
    base = f"http://127.0.0.1:{web.port('http', 'http')}/lab/dashboard"
    refused = curl("-i", base).stdout.decode()
    assert status_of(refused.encode()) == [401] and "admin_user" in refused
    assert status_of(curl("-i", "-u", "alice:alice", base).stdout) == [403]
    # An open session elsewhere appears as live: keep a connection open meanwhile.
    connection = http.client.HTTPConnection("127.0.0.1", web.port("http", "http"), timeout=10)
    connection.request("GET", "/lab/http/basic.html")
    connection.getresponse().read()
    page = curl("-i", "-u", "admin:admin", base).stdout.decode()
    connection.close()
    assert status_of(page.encode()) == [200]
    assert '<meta http-equiv="refresh"' in page
    assert "GET /lab/http/basic.html HTTP/1.1" in page
    assert "<td>alice</td><td>INBOX</td>" in page
    live = page.split('id="sessions"')[1].split("<h2")[0]
    assert "Live sessions (0)" not in page and "<td>http</td>" in live
