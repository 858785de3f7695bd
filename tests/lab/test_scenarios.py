"""Fault scenarios (services/scenarios): files read and refused with the file named, the
CLI's start/stop, and the same over the API and the dashboard's buttons, with a real FTP
client seeing the symptom and then not (issue 17, part 1)."""

from __future__ import annotations

import base64
import http.client
import io
import json
import re

import pytest

from services import scenarios
from services.faults import FaultError, kinds
from services.store import Store
from tests.ftputil import ftp_login
from tests.lab.test_faults import curl_get, settled


def test_every_shipped_scenario_loads_with_symptoms_and_known_kinds():
    found = scenarios.catalogue()
    assert len(found) >= 3
    for name, scenario in found.items():
        assert not isinstance(scenario, FaultError), scenario
        assert scenario.title and scenario.symptoms and scenario.solution, name
        assert {p.kind for p in scenario.faults} <= set(kinds())


@pytest.mark.parametrize(("text", "error"), [
    ("title = 'x'\n", "at least one [[fault]]"),
    ("[[fault]]\nkind = 'ftp.dead-data-port'\n", "give a title"),
    ("title = 'x'\n[[fault]]\nkind = 'ftp.nope'\n", "fault 1: unknown fault kind 'ftp.nope'"),
    ("title = 'x'\n[[fault]]\nkind = 'ftp.dead-data-port'\nfor = 'soon'\n", "fault 1: --for 'soon'"),
    ("title = 'x'\n[[fault]]\nkind = 3\n", 'give kind = "SERVICE.NAME"'),
    ("title = \n", "bad.toml: "),
])
def test_a_bad_file_is_named_with_what_is_wrong(tmp_path, text, error):
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(FaultError, match=r"^bad\.toml: .*" + re.escape(error.removeprefix("bad.toml: "))):
        scenarios.load(tmp_path / "bad.toml")
    assert isinstance(scenarios.catalogue(tmp_path)["bad"], FaultError)  # listed, not fatal


def test_start_replaces_its_running_copy_and_stop_ends_only_it(tmp_path):
    own = tmp_path / "scenarios"
    own.mkdir()
    (own / "two.toml").write_text(
        "title = 'Two'\nsymptoms = 's'\n[[fault]]\nkind = 'ftp.dead-data-port'\n"
        "[[fault]]\nkind = 'dhcp.short-lease'\ntarget = 'pc1'\nfor = '5m'\n")
    store = Store(tmp_path / "data")
    try:
        store.faults.add("ftp.wrong-pasv-address")  # switched on by hand: not the scenario's
        two = scenarios.find(own, "two")
        scenarios.start(store, two, target="alice", seconds=60)
        started = scenarios.start(store, two, target="bob")  # again: replaces the first copy
        assert [(f.kind, f.target, f.scenario) for f in started] == [
            ("ftp.dead-data-port", "bob", "two"), ("dhcp.short-lease", "pc1", "two")]
        assert started[0].until is None and started[1].until is not None
        assert len(store.faults.active()) == 3
        assert store.faults.clear(scenario="two") == 2
        assert [f.kind for f in store.faults.active()] == ["ftp.wrong-pasv-address"]
        with pytest.raises(FaultError, match="no scenario 'three'"):
            scenarios.find(own, "three")
    finally:
        store.close()


def test_cli_lists_starts_and_stops_a_scenario(lab):
    server = lab.start(only="ftp")
    listed = server.cli("fault", "scenarios")
    assert listed.returncode == 0 and "ftp-firewall: Downloads that never start" in listed.stdout
    assert "faults: ftp.wrong-pasv-address" in listed.stdout
    started = server.cli("fault", "start", "ftp-firewall", "--target", "alice", "--for", "10m")
    assert started.returncode == 0, started.stderr
    assert "ftp.wrong-pasv-address for alice" in started.stdout
    assert "(scenario ftp-firewall)" in server.cli("fault", "list").stdout
    unknown = server.cli("fault", "start", "no-such")
    assert unknown.returncode == 2 and "no scenario 'no-such'" in unknown.stderr
    assert server.cli("fault", "stop", "ftp-firewall").stdout.startswith("stopped ftp-firewall: 1 fault")
    assert server.cli("fault", "stop", "ftp-firewall").returncode == 1  # not on any more


# --- over HTTP: the API and the dashboard ------------------------------------------------

def request(server, method: str, path: str, body: bytes | None = None, auth: str = "admin:admin",
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port("http", "http"), timeout=30)
    sent = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode(), **(headers or {})}
    connection.request(method, path, body=body, headers=sent)
    response = connection.getresponse()
    answer = response.status, dict(response.getheaders()), response.read()
    connection.close()
    return answer


def api(server, method: str, path: str, value: object = None, auth: str = "admin:admin",
        headers: dict[str, str] | None = None) -> tuple[int, object]:
    body = None if value is None else json.dumps(value).encode()
    status, _, payload = request(server, method, "/api/v1" + path, body, auth,
                                 {"Content-Type": "application/json", **(headers or {})})
    return status, json.loads(payload) if payload else None


@pytest.fixture
def ftp_web(lab):
    server = lab.start(only="ftp,http")
    for user in ("alice", "bob"):
        ftp = ftp_login(server, user)
        ftp.storbinary("STOR f.txt", io.BytesIO(f"{user}'s\n".encode()))
        ftp.quit()
    return server


def test_api_switches_faults_and_scenarios_and_curl_sees_it(ftp_web):
    server = ftp_web
    status, known = api(server, "GET", "/fault-kinds", auth="x:y")  # public: no secret
    assert status == 200 and {"kind": "ftp.dead-data-port", "effect": kinds()["ftp.dead-data-port"]} in known
    assert api(server, "GET", "/faults", auth="alice:alice")[0] == 403  # the teacher's plan
    assert api(server, "POST", "/faults", {"kind": "ftp.nope"})[0] == 400
    assert api(server, "POST", "/faults", {"kind": "ftp.dead-data-port", "for": "soon"})[0] == 400
    status, fault = api(server, "POST", "/faults", {"kind": "ftp.dead-data-port", "target": "alice",
                                                    "for": "1h"})
    assert status == 201 and fault["target"] == "alice" and fault["until"] > fault["created"]
    hit = settled(lambda: curl_get(server, "alice"), lambda r: r.returncode != 0)
    assert hit.returncode == 7 and curl_get(server, "bob").stdout == "bob's\n"
    assert api(server, "GET", "/faults")[1] == [fault]
    assert api(server, "DELETE", f"/faults/{fault['id']}")[0] == 204
    assert api(server, "DELETE", f"/faults/{fault['id']}")[0] == 404
    assert settled(lambda: curl_get(server, "alice"), lambda r: r.returncode == 0).returncode == 0
    # a scenario, for bob only
    status, listed = api(server, "GET", "/scenarios")
    assert status == 200 and any(s["id"] == "ftp-firewall" and s["solution"] for s in listed)
    status, started = api(server, "POST", "/scenarios/ftp-firewall", {"target": "bob", "for": 600})
    assert status == 200 and [f["kind"] for f in started["faults"]] == ["ftp.wrong-pasv-address"]
    assert api(server, "POST", "/scenarios/nope", {})[0] == 404
    assert api(server, "DELETE", "/scenarios/ftp-firewall")[0] == 204
    assert api(server, "DELETE", "/scenarios/ftp-firewall")[0] == 404
    # documented: every route of the table is in the OpenAPI document
    document = api(server, "GET", "/openapi.json")[1]
    assert {"get", "post", "delete"} <= set(document["paths"]["/faults"])
    assert "post" in document["paths"]["/scenarios/{name}"]


def test_a_page_of_another_site_cannot_switch_faults_on(ftp_web):
    """CSRF: a browser sends the lab's Basic credentials with another site's form post."""
    server = ftp_web
    form = b"action=add&kind=ftp.dead-data-port&target=&for="
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null"}):  # null: a sandboxed page, as students' pages are
        status, _, _ = request(server, "POST", "/lab/dashboard/faults", form, headers={
            "Content-Type": "application/x-www-form-urlencoded", **headers})
        assert status == 403
        assert api(server, "POST", "/faults", {"kind": "ftp.dead-data-port"}, headers=headers)[0] == 403
    assert api(server, "GET", "/faults")[1] == []
    # a student's own page is sandboxed (an origin of its own), so it cannot post as the teacher
    ftp = ftp_login(server, "alice")
    ftp.storbinary("STOR public_html/page.html", io.BytesIO(b"<script>fetch('/api/v1/users')</script>"))
    ftp.storbinary("STOR public_html/big.bin", io.BytesIO(b"x" * 3_000_000))  # the big-file path
    ftp.quit()
    for name in ("page.html", "big.bin"):
        status, headers, _ = request(server, "GET", f"/~alice/{name}")
        assert status == 200 and headers["Content-Security-Policy"].startswith("sandbox "), headers


def test_dashboard_buttons_switch_faults_and_scenarios(ftp_web):
    server = ftp_web
    host = f"127.0.0.1:{server.port('http', 'http')}"
    same = {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://{host}"}
    page = request(server, "GET", "/lab/dashboard")[2].decode()
    assert 'id="faults"' in page and "no faults: the lab works as it should" in page
    assert '<option value="ftp.dead-data-port"' in page and "Downloads that never start" in page
    status, headers, _ = request(server, "POST", "/lab/dashboard/faults",
                                 b"action=add&kind=ftp.dead-data-port&target=alice&for=10m", headers=same)
    assert status == 303 and headers["Location"] == "/lab/dashboard#faults"
    assert settled(lambda: curl_get(server, "alice"), lambda r: r.returncode != 0).returncode == 7
    page = request(server, "GET", "/lab/dashboard")[2].decode()
    assert "<code>ftp.dead-data-port</code></td><td>alice</td>" in page
    bad = request(server, "POST", "/lab/dashboard/faults", b"action=add&kind=ftp.nope", headers=same)
    assert bad[0] == 200 and "unknown fault &#x27;ftp.nope&#x27;" in bad[2].decode()
    assert request(server, "POST", "/lab/dashboard/faults", b"action=clear", headers=same)[0] == 303
    assert settled(lambda: curl_get(server, "alice"), lambda r: r.returncode == 0).returncode == 0
    assert request(server, "POST", "/lab/dashboard/faults", b"action=start&scenario=ftp-firewall",
                   headers=same)[0] == 303
    page = request(server, "GET", "/lab/dashboard")[2].decode()
    assert "ftp-firewall" in page and 'name="action" value="stop"' in page
    assert request(server, "POST", "/lab/dashboard/faults", b"action=stop&scenario=ftp-firewall",
                   headers=same)[0] == 303
    assert api(server, "GET", "/faults")[1] == []
    assert request(server, "POST", "/lab/dashboard/faults", b"action=clear", auth="alice:alice",
                   headers=same)[0] == 403
    assert request(server, "GET", "/lab/dashboard/faults")[0] == 405


def test_capture_download_needs_a_capture_and_the_administrator(ftp_web):
    server = ftp_web
    assert request(server, "GET", "/lab/dashboard/capture?client=alice", auth="alice:alice")[0] == 403
    status, _, body = request(server, "GET", "/api/v1/captures/export?client=alice")
    assert status == 404 and b"no capture in" in body
    assert json.loads(request(server, "GET", "/api/v1/captures")[2]) == {"running": None, "files": []}
    assert "no capture yet" in request(server, "GET", "/lab/dashboard")[2].decode()


def test_a_cleared_faults_id_is_never_given_again(tmp_path):
    store = Store(tmp_path / "data")
    try:
        first = store.faults.add("ftp.dead-data-port")
        store.faults.clear()
        assert store.faults.add("ftp.dead-data-port").id == first.id + 1
    finally:
        store.close()
