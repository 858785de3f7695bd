"""The lab's JSON API under /api/v1 (for CI: peers are Mailpit's and GreenMail's APIs).

One table of routes gives both the dispatch and the OpenAPI document at
/api/v1/openapi.json, so the document cannot drift from what is served. Errors are
{"status": N, "message": "..."} with that status. Access: "public", "admin" (the [api]
administrator), or "owner" (the {user} of the path, or the administrator).
"""

from __future__ import annotations

import json
import re
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET

from .. import __version__, capture, faults, scenarios
from ..journal import recent
from ..store import DiskFull, UserError
from . import classview
from .auth import cross_site, login
from .headers import summary
from .labinfo import services
from .responses import send, send_json, send_no_body

if TYPE_CHECKING:
    from ..lab import Lab
    from ..store.faults import Fault
    from .site import Router

PREFIX = "/api/v1"
MAX_LIST = 1000
MAX_BODY = 1024 * 1024  # the largest JSON body read
MAX_DEPTH = 32  # the deepest nesting of [ and { accepted in a JSON body
log = Logger()


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Call:
    lab: Lab
    request: Any
    params: dict[str, str]
    who: str = ""

    def query(self, name: str, default: str = "") -> str:
        values = self.request.args.get(name.encode())
        return values[0].decode("utf-8", "replace") if values else default

    def json_body(self) -> dict[str, Any]:
        data = self.request.content.read(MAX_BODY + 1)
        if len(data) > MAX_BODY:
            raise ApiError(413, f"the body is over {MAX_BODY} bytes")
        if nesting(data) > MAX_DEPTH:  # json.loads would recurse: RecursionError, a 500
            raise ApiError(400, f"the body nests deeper than {MAX_DEPTH} levels")
        try:
            value = json.loads(data or b"null")
        except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError
            raise ApiError(400, f"the body is not JSON: {error}") from None
        if not isinstance(value, dict):
            raise ApiError(400, "the body must be a JSON object")
        return value


@dataclass
class Route:
    method: str
    pattern: str  # segments, "{name}" for a parameter
    access: str  # "public", "admin" or "owner"
    summary: str
    handler: Callable[[Call], Any]
    status: int = 200
    query: dict[str, str] = field(default_factory=dict)  # name -> description
    body: dict[str, Any] | None = None  # JSON schema of the request body
    produces: str = "application/json"

    @property
    def segments(self) -> list[str]:
        return [s for s in self.pattern.split("/") if s]

    def match(self, segments: list[str]) -> dict[str, str] | None:
        mine = self.segments
        if len(mine) != len(segments):
            return None
        params = {}
        for pattern, value in zip(mine, segments, strict=True):
            if pattern.startswith("{"):
                params[pattern[1:-1]] = value
            elif pattern != value:
                return None
        return params


# --- handlers ----------------------------------------------------------------------------

def _services(call: Call) -> Any:
    return [{
        "name": s.name, "summary": s.summary, "enabled": s.enabled, "running": s.running,
        "host": s.host, "aliases": s.aliases, "address": s.address, "address6": s.address6,
        "listeners": [{"name": x.name, "port": x.port, "transport": x.transport,
                       "tls": x.tls or "none", "active": x.active, "note": x.note}
                      for x in s.listeners],
    } for s in services(call.lab)]


def _user_summary(lab: Lab, name: str, created: float) -> dict[str, Any]:
    boxes = lab.store.mail.mailboxes(name)
    return {"name": name, "created": created, "mailboxes": len(boxes),
            "messages": sum(lab.store.mail.status(b.id).messages for b in boxes)}


def _users(call: Call) -> Any:
    return [_user_summary(call.lab, u.name, u.created) for u in call.lab.store.users.list()]


def _create_user(call: Call) -> Any:
    body = call.json_body()
    name, password = body.get("name"), body.get("password")
    if not isinstance(name, str) or not isinstance(password, str):
        raise ApiError(400, 'give "name" and "password" as strings')
    if call.lab.store.users.get(name) is not None:
        raise ApiError(409, f"user {name!r} exists")
    try:
        user = call.lab.store.users.add(name, password)
    except UserError as error:
        raise ApiError(400, str(error)) from None
    call.request.setHeader(b"Location", f"{PREFIX}/users/{urllib.parse.quote(name)}".encode())
    return _user_summary(call.lab, user.name, user.created)


def _user(call: Call) -> Any:
    user = _existing_user(call)
    return _user_summary(call.lab, user.name, user.created)


def _delete_user(call: Call) -> Any:
    user = _existing_user(call)
    call.lab.store.users.delete(user.name)
    if call.query("keep_files") not in ("1", "true", "yes"):
        call.lab.store.files.remove_home(user.name)
    return None


def _existing_user(call: Call) -> Any:
    user = call.lab.store.users.get(call.params["user"])
    if user is None:
        raise ApiError(404, f"no user {call.params['user']!r}")
    return user


def _mailboxes(call: Call) -> Any:
    user = _existing_user(call)
    out = []
    for box in call.lab.store.mail.mailboxes(user.name):
        status = call.lab.store.mail.status(box.id)
        # noselect: a name IMAP DELETE kept for its inferiors; it never has messages.
        out.append({"name": box.name, "special_use": box.special_use, "noselect": box.noselect,
                    "messages": status.messages, "unseen": status.unseen, "size": status.size,
                    "uidvalidity": status.uidvalidity, "uidnext": status.uidnext})
    return out


def _mailbox(call: Call) -> Any:
    user = _existing_user(call)
    box = call.lab.store.mail.mailbox(user.name, call.params["mailbox"])
    if box is None:
        raise ApiError(404, f"no mailbox {call.params['mailbox']!r} for {user.name!r}")
    return box


def nesting(data: bytes) -> int:
    """The deepest nesting of arrays and objects in JSON text `data` (brackets inside
    strings do not count; for invalid JSON, an upper bound)."""
    depth = deepest = 0
    for token in _STRUCTURE.findall(data):
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


_STRUCTURE = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


def _message_json(call: Call, box: Any, message: Any, data: bytes) -> dict[str, Any]:
    return {"uid": message.uid, "size": message.size, "flags": sorted(message.flags),
            "internaldate": message.internaldate, "headers": summary(data),
            "raw": f"{PREFIX}/users/{urllib.parse.quote(box.user)}/mailboxes/"
                   f"{urllib.parse.quote(box.name, safe='')}/messages/{message.uid}/raw"}


def _messages(call: Call) -> Any:
    box = _mailbox(call)
    store = call.lab.store.mail
    listed = store.messages(box.id)[-MAX_LIST:]
    return [_message_json(call, box, m, store.data(box.id, m.uid) or b"") for m in listed]


def _find_message(call: Call) -> tuple[Any, Any, bytes]:
    box = _mailbox(call)
    try:
        uid = int(call.params["uid"])
    except ValueError:
        raise ApiError(400, "uid must be a number") from None
    message = next((m for m in call.lab.store.mail.messages(box.id) if m.uid == uid), None)
    data = call.lab.store.mail.data(box.id, uid) if message else None
    if message is None or data is None:
        raise ApiError(404, f"no message {uid} in {box.name!r}")
    return box, message, data


def _message(call: Call) -> Any:
    box, message, data = _find_message(call)
    return _message_json(call, box, message, data)


def _raw(call: Call) -> Any:
    _, _, data = _find_message(call)
    return data


def _delete_message(call: Call) -> Any:
    box, message, _ = _find_message(call)
    call.lab.store.mail.expunge(box.id, [message.uid])
    return None


def _leases(call: Call) -> Any:
    every = call.query("all") == "1"
    net = call.lab.store.net
    return [{"family": 4, "mac": x.mac, "ip": x.ip, "hostname": x.hostname,
             "client_id": x.client_id, "expires": x.expires, "state": x.state}
            for x in net.leases(include_expired=every)] + [
            {"family": 6, "duid": x.duid, "iaid": x.iaid, "ip": x.ip, "hostname": x.hostname,
             "expires": x.expires, "state": x.state}
            for x in net.leases6(include_expired=every)]


def _records(call: Call) -> Any:
    return [{"name": r.name, "type": r.type, "value": r.value, "ttl": r.ttl, "owner": r.owner}
            for r in call.lab.store.net.live_records()]


def _journal(call: Call) -> Any:
    try:
        since = float(call.query("since", "0"))
        limit = min(int(call.query("limit", "500")), 5000)
    except ValueError:
        raise ApiError(400, "since must be a number (Unix time) and limit an integer") from None
    call.lab.journal.flush()  # this process's latest events too
    return recent(call.lab.store, call.query("service") or None, since, max(1, limit))


# --- faults, scenarios and captures (issue 17: services/faults.py, scenarios, capture.py) ---

def _fault_json(fault: Fault) -> dict[str, Any]:
    return {"id": fault.id, "kind": fault.kind, "target": fault.target, "until": fault.until,
            "created": fault.created, "scenario": fault.scenario}


def _fault_kinds(call: Call) -> Any:
    return [{"kind": kind, "effect": effect} for kind, effect in sorted(faults.kinds().items())]


def _faults(call: Call) -> Any:
    return [_fault_json(f) for f in call.lab.store.faults.active()]


def _seconds(body: dict[str, Any]) -> str | float | None:
    seconds = body.get("for")
    if isinstance(seconds, bool) or not isinstance(seconds, str | int | float | None):
        raise ApiError(400, '"for" is a duration: "30s", "10m", "2h" or a number of seconds')
    return seconds


def _add_fault(call: Call) -> Any:
    body = call.json_body()
    kind, target = body.get("kind"), body.get("target", "")
    if not isinstance(kind, str) or not isinstance(target, str):
        raise ApiError(400, 'give "kind" (protolab fault kinds) and, if wanted, "target" as strings')
    try:
        fault = faults.switch_on(call.lab.store, kind, target, _seconds(body))
    except faults.FaultError as failure:
        raise ApiError(400, str(failure)) from None
    call.request.setHeader(b"Location", f"{PREFIX}/faults/{fault.id}".encode())
    return _fault_json(fault)


def _clear_fault(call: Call) -> Any:
    try:
        fault_id = int(call.params["id"])
    except ValueError:
        raise ApiError(400, "a fault's id is a number") from None
    if not call.lab.store.faults.clear(fault_id):
        raise ApiError(404, f"no fault #{fault_id}")
    return None


def _clear_faults(call: Call) -> Any:
    call.lab.store.faults.clear()
    return None


def _scenario_json(name: str, scenario: scenarios.Scenario | faults.FaultError) -> dict[str, Any]:
    if isinstance(scenario, faults.FaultError):
        return {"id": name, "error": str(scenario)}
    return {"id": name, "title": scenario.title, "symptoms": scenario.symptoms,
            "solution": scenario.solution,
            "faults": [{"kind": p.kind, "target": p.target, "seconds": p.seconds}
                       for p in scenario.faults]}


def _scenarios(call: Call) -> Any:
    return [_scenario_json(name, s) for name, s in scenarios.catalogue(call.lab.data / "scenarios").items()]


def _start_scenario(call: Call) -> Any:
    body = call.json_body() if call.request.getHeader(b"Content-Length") not in (None, b"0") else {}
    target = body.get("target", "")
    if not isinstance(target, str):
        raise ApiError(400, '"target" must be a string')
    try:
        scenario = scenarios.find(call.lab.data / "scenarios", call.params["name"])
        seconds = _seconds(body)
        started = scenarios.start(call.lab.store, scenario, target.strip(),
                                  faults.duration(str(seconds)) if seconds is not None else None)
    except faults.FaultError as failure:
        status = 404 if str(failure).startswith("no scenario") else 400
        raise ApiError(status, str(failure)) from None
    return {"scenario": scenario.id, "title": scenario.title, "faults": [_fault_json(f) for f in started]}


def _stop_scenario(call: Call) -> Any:
    if not call.lab.store.faults.clear(scenario=call.params["name"]):
        raise ApiError(404, f"scenario {call.params['name']!r} is not on")
    return None


def _captures(call: Call) -> Any:
    running = capture.running(call.lab.data)
    folder = call.lab.data / "captures"
    files = sorted(folder.glob("*.pcap*"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return {"running": None if running is None else {"file": Path(running.file).name,
                                                        "interface": running.interface,
                                                        "started": running.started},
            "files": [{"name": p.name, "size": p.stat().st_size, "modified": p.stat().st_mtime}
                      for p in files]}


def _export_capture(call: Call) -> Any:
    """The latest capture cut to one client, its TLS secrets embedded: tshark and editcap
    take seconds on a big capture, so they run in a thread and the reactor serves on."""
    who = call.query("client").strip()
    try:
        since = float(call.query("since")) if call.query("since") else None
        until = float(call.query("until")) if call.query("until") else None
        source = capture.latest(call.lab.data)
    except ValueError:
        raise ApiError(400, "since and until are Unix times") from None
    except capture.CaptureError as failure:
        raise ApiError(404, str(failure)) from None
    keylog = Path(call.lab.config.tls.keylog) if call.lab.config.tls.keylog else None
    name = f"{who or 'everyone'}.pcapng".replace("/", "_")
    call.request.setHeader(b"Content-Disposition", f'attachment; filename="{name}"'.encode())
    return deferToThread(_cut, call.lab.data, source, keylog, who, since, until)


def _cut(data: Path, source: Path, keylog: Path | None, who: str, since: float | None,
         until: float | None) -> bytes:
    with tempfile.TemporaryDirectory(prefix="protolab-api-") as tmp:
        out = Path(tmp) / "out.pcapng"
        try:
            capture.export_for(data, source, out, keylog, who, since, until)
        except capture.CaptureError as failure:
            raise ApiError(500, str(failure)) from None
        return out.read_bytes()


def _index(call: Call) -> Any:
    return {"version": __version__, "openapi": f"{PREFIX}/openapi.json",
            "routes": [f"{r.method} {PREFIX}{r.pattern}" for r in ROUTES]}


def _openapi(call: Call) -> Any:
    return openapi()


USER_BODY = {"type": "object", "required": ["name", "password"],
             "properties": {"name": {"type": "string", "example": "carol"},
                            "password": {"type": "string", "example": "carol"}}}
MAILBOX = "/users/{user}/mailboxes/{mailbox}"
DURATION = {"oneOf": [{"type": "string", "example": "10m"}, {"type": "number"}],
            "description": "how long: 30s, 10m, 2h, or seconds (default: until cleared)"}
FAULT_BODY = {"type": "object", "required": ["kind"],
              "properties": {"kind": {"type": "string", "example": "ftp.dead-data-port"},
                             "target": {"type": "string", "example": "alice",
                                        "description": "a user, client address or name "
                                                       "(default: everyone)"},
                             "for": DURATION}}
SCENARIO_BODY = {"type": "object", "properties": {
    "target": {"type": "string", "description": "for the faults that name no target"},
    "for": DURATION}}

ROUTES = [
    Route("GET", "/", "public", "This index of the API's routes", _index),
    Route("GET", "/openapi.json", "public", "This API as an OpenAPI 3.0 document", _openapi),
    Route("GET", "/services", "public",
          "The lab's services: host names, address, listeners (ports with the offset, TLS) "
          "and whether a process serves each now", _services),
    Route("GET", "/users", "admin", "Every user with mailbox and message counts", _users),
    Route("POST", "/users", "admin", "Create a user (with its mailboxes)", _create_user,
          status=201, body=USER_BODY),
    Route("GET", "/users/{user}", "owner", "One user", _user),
    Route("DELETE", "/users/{user}", "admin", "Delete a user, its mail and (unless "
          "keep_files=1) its files", _delete_user, status=204,
          query={"keep_files": "1 keeps the user's home directory"}),
    Route("GET", "/users/{user}/mailboxes", "owner", "The user's mailboxes with counts",
          _mailboxes),
    Route("GET", MAILBOX + "/messages", "owner",
          f"The mailbox's messages (the last {MAX_LIST}) with their main headers", _messages),
    Route("GET", MAILBOX + "/messages/{uid}", "owner", "One message's flags and headers",
          _message),
    Route("GET", MAILBOX + "/messages/{uid}/raw", "owner", "One message as sent (RFC 5322)",
          _raw, produces="message/rfc822"),
    Route("DELETE", MAILBOX + "/messages/{uid}", "owner", "Delete (expunge) one message",
          _delete_message, status=204),
    Route("GET", "/leases", "public", "DHCP leases, DHCPv4's (family 4, by MAC) then "
          "DHCPv6's (family 6, by DUID and IAID); current ones, all=1 adds expired ones",
          _leases, query={"all": "1 includes expired leases"}),
    Route("GET", "/dns/records", "public", "The dynamic DNS records the lab answers "
          "with now (those of leases that have not ended, and added ones)", _records),
    Route("GET", "/fault-kinds", "public", "What can break, per service", _fault_kinds),
    Route("GET", "/scenarios", "admin", "The fault scenarios, with the symptoms a "
          "student sees and what they should find", _scenarios),
    Route("POST", "/scenarios/{name}", "admin", "Switch a scenario's faults on (again: "
          "replacing its running copy)", _start_scenario, body=SCENARIO_BODY),
    Route("DELETE", "/scenarios/{name}", "admin", "Switch a scenario's faults off",
          _stop_scenario, status=204),
    Route("GET", "/faults", "admin", "The faults that are on", _faults),
    Route("POST", "/faults", "admin", "Switch a fault on", _add_fault, status=201, body=FAULT_BODY),
    Route("DELETE", "/faults", "admin", "Switch every fault off", _clear_faults, status=204),
    Route("DELETE", "/faults/{id}", "admin", "Switch one fault off", _clear_fault, status=204),
    Route("GET", "/captures", "admin", "The running capture and the captures kept", _captures),
    Route("GET", "/captures/export", "admin", "The latest capture cut to one client (an "
          "address or a lab user), its TLS sessions' secrets embedded: opens decrypted in "
          "Wireshark", _export_capture, produces="application/x-pcapng",
          query={"client": "an address or a lab user (default: everyone)",
                 "since": "Unix time", "until": "Unix time"}),
    Route("GET", "/journal", "admin", "Recent journal events, oldest first", _journal,
          query={"service": "only this service's events", "since": "Unix time: only "
                 "events after it", "limit": "at most this many (default 500)"}),
]

# --- the classroom (issue 16): the grid of services/http/classview.py ---------------------

def _class_progress(call: Call) -> Any:
    return classview.api_progress(call.lab)


def _class_student(call: Call) -> Any:
    name = call.params["user"]
    if call.lab.store.users.get(name) is None:
        raise ApiError(404, f"no user {name}")
    return classview.api_progress(call.lab, name)  # a user not in the roster: no row


ROUTES += [
    Route("GET", "/class/progress", "admin",
          "The class grid: every exercise, every student (with team) and, per exercise "
          "done, the journal sessions that show it", _class_progress),
    Route("GET", "/class/progress/{user}", "owner",
          "One student's row of the class grid (a student may read their own; a lab "
          "user not in the roster has none)",
          _class_student),
]

PARAM_EXAMPLES = {"user": "alice", "mailbox": "INBOX", "uid": "1", "id": "1",
                  "name": "ftp-firewall"}


def operation_id(route: Route) -> str:
    """GET /users/{user}/mailboxes -> get_users_user_mailboxes (unique per route)."""
    words = [s.strip("{}").replace(".", "_") for s in route.segments] or ["index"]
    return "_".join([route.method.lower(), *words])


def openapi() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": operation_id(route),
            "parameters": [
                {"name": name[1:-1], "in": "path", "required": True,
                 "schema": {"type": "integer" if name in ("{uid}", "{id}") else "string"},
                 "example": PARAM_EXAMPLES.get(name[1:-1], "x")}
                for name in route.segments if name.startswith("{")
            ] + [{"name": name, "in": "query", "required": False, "description": text,
                  "schema": {"type": "string"}} for name, text in route.query.items()],
            "responses": {
                str(route.status): {"description": "success"} if route.status == 204 else {
                    "description": "success",
                    "content": {route.produces: {"schema": {}}}},
                "default": {"description": "an error",
                            "content": {"application/json": {"schema": {
                                "$ref": "#/components/schemas/Error"}}}},
            },
            "x-access": route.access,
        }
        if route.access != "public":
            operation["security"] = [{"basic": []}]
        if route.body is not None:
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": route.body}}}
        paths.setdefault(route.pattern, {})[route.method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "protolab API", "version": __version__,
                 "description": "Users, mail, leases, DNS records and the journal of a "
                                "protolab lab. x-access: public, admin, or owner (the "
                                "{user} of the path, or the administrator)."},
        "servers": [{"url": PREFIX}],
        "paths": paths,
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": {"Error": {"type": "object", "required": ["status", "message"],
                                  "properties": {"status": {"type": "integer"},
                                                 "message": {"type": "string"}}}},
        },
    }


# --- dispatch -----------------------------------------------------------------------------

def error(request: Any, status: int, message: str,
          headers: dict[bytes, bytes] | None = None) -> bytes:
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    return send_json(request, {"status": status, "message": message}, status)


class Api:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def __call__(self, request: Any) -> Any:
        raw = request.path[len(PREFIX):]
        try:
            segments = [urllib.parse.unquote_to_bytes(s).decode("utf-8")
                        for s in raw.split(b"/") if s]
        except UnicodeDecodeError:
            return error(request, 400, "the path is not UTF-8")
        matches = [(route, params) for route in ROUTES
                   if (params := route.match(segments)) is not None]
        if not matches:
            return error(request, 404, f"no such API route: {request.path.decode('latin-1')}")
        method = request.method.decode("latin-1")
        if method == "HEAD":
            method = "GET"
        chosen = next(((r, p) for r, p in matches if r.method == method), None)
        if chosen is None:
            allowed = ", ".join(sorted({r.method for r, _ in matches}))
            return error(request, 405, f"{method} is not allowed here (allowed: {allowed})",
                         {b"Allow": allowed.encode()})
        route, params = chosen
        if method != "GET" and cross_site(request):
            return error(request, 403, "a request from another site's page may not change the lab")
        call = Call(self.lab, request, params)
        denied = self.authorize(call, route)
        if denied is not None:
            return denied
        return self.run(call, route)

    def run(self, call: Call, route: Route) -> Any:
        """Answer an authorized call (the dashboard calls this too, for its downloads)."""
        request = call.request
        try:
            result = route.handler(call)
        except ApiError as failure:
            return error(request, failure.status, failure.message)
        except DiskFull:
            return error(request, 507, "the lab's disk is full: nothing was changed")
        if isinstance(result, Deferred):
            self.later(request, route, result)
            return NOT_DONE_YET
        return self.answer(request, route, result)

    def later(self, request: Any, route: Route, result: Deferred[Any]) -> None:
        """Answer when a handler's thread is done, unless the client has gone by then."""
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def done(value: Any) -> None:
            if not gone:
                self.write(request, self.answer(request, route, value))

        def failed(failure: Failure) -> None:
            if gone:
                return
            if failure.check(ApiError):
                problem = failure.value
                body = error(request, problem.status, problem.message)
            else:
                log.failure("API handler failed", failure)
                body = error(request, 500, "the lab failed to answer: see its log")
            self.write(request, body)

        result.addCallbacks(done, failed)

    @staticmethod
    def write(request: Any, body: bytes) -> None:
        request.setHeader(b"Content-Length", str(len(body)).encode())
        request.write(body)
        request.finish()

    def answer(self, request: Any, route: Route, result: Any) -> bytes:
        if route.status == 204:
            return send_no_body(request, 204)
        if isinstance(result, bytes):
            return send(request, result, route.produces.encode(), route.status)
        return send_json(request, result, route.status)

    def authorize(self, call: Call, route: Route) -> bytes | None:
        if route.access == "public":
            return None
        who = login(self.lab, call.request, admin_ok=True)
        if who is None:
            return error(call.request, 401, "give a user's or the administrator's name and "
                         "password (HTTP Basic)",
                         {b"WWW-Authenticate": b'Basic realm="protolab API", charset="UTF-8"'})
        admin = who == self.lab.config.api.admin_user
        call.who = who
        if admin or (route.access == "owner" and call.params.get("user") == who):
            return None
        return error(call.request, 403, f"{who} may not do this")


def register(router: Router, lab: Lab) -> None:
    api = Api(lab)
    router.page(PREFIX, api)
    router.tree(PREFIX + "/", api)



