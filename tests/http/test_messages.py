"""Messages anyone can deliver, seen over HTTP: the API's listing and message views and the
dashboard answer 200 for every byte sequence a sender can put in a message, with each
header decoded when the email package can and raw text when it cannot."""

from __future__ import annotations

import json
import smtplib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.http.headers import raw_headers, summary

from tests.http.test_server import curl, status_of
from tests.http.test_api import as_json, call

PARENS = b"(" * 5000  # made email's header parser recurse past the interpreter's limit
NASTY = [
    b"From: " + PARENS + b"\r\nSubject: parens\r\n\r\nbody\r\n",
    b"From: " + b"<" * 3000 + b"\r\nTo: " + b'"' * 3000 + b"\r\n\r\nx\r\n",
    b"From: =?utf-8?q?" + b"=FF" * 500 + b"?=\r\nSubject: =?x-unknown?b?////?=\r\n\r\nx\r\n",
    b"From: \xff\xfe\x80 <a@b>\r\nSubject: caf\xc3\xa9 \xe9\r\n\r\nx\r\n",
    b"Message-ID: <" + b"@" * 4000 + b">\r\nDate: 99 Foo 99999 99:99:99 +9999\r\n\r\nx\r\n",
    b"Subject: a\r\n " + b"(" * 3000 + b"\r\n\tfolded\r\n\r\nx\r\n",
    b"To: " + b"a@b, " * 2000 + b"\r\nCc: ,,,,;;;;::::\r\n\r\nx\r\n",
]


def encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_summary_of_any_bytes_is_text(data):
    headers = summary(data)
    assert all(isinstance(v, str) and encodable(v) for v in headers.values())
    json.dumps(headers)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["from", "to", "cc", "subject", "date", "message-id"]),
       st.binary(max_size=6000).filter(lambda b: b"\n" not in b and b"\r" not in b))
def test_any_header_value_is_given_decoded_or_raw(name, value):
    data = name.encode() + b": " + value + b"\r\n\r\nbody\r\n"
    headers = summary(data)
    raw = value.strip(b" \t").decode("utf-8", "replace")
    assert raw_headers(data)[name] == raw
    assert encodable(headers[name])


def test_parens_from_the_attack_come_back_raw():
    assert summary(NASTY[0]) == {"from": PARENS.decode(), "subject": "parens"}
    assert summary(NASTY[5])["subject"].endswith(" folded")


def test_delivered_over_smtp_then_listed_over_the_api(lab):
    """The real path: mail from anyone to port 25, then the recipient's listing."""
    server = lab.start(only="smtp,http")
    with smtplib.SMTP("127.0.0.1", server.port("smtp", "smtp"), timeout=10) as client:
        client.sendmail("x@example.org", ["alice@lab.test"],
                        b"From: Carol <carol@lab.test>\r\nSubject: fine\r\n\r\nfine\r\n")
        for message in NASTY:
            client.sendmail("x@example.org", ["alice@lab.test"], message)
    path = "/api/v1/users/alice/mailboxes/INBOX/messages"
    status, listing = as_json(server, "GET", path, auth=("alice", "alice"))
    assert status == 200 and len(listing) == len(NASTY) + 1
    assert listing[0]["headers"] == {"from": "Carol <carol@lab.test>", "subject": "fine"}
    assert listing[1]["headers"]["from"] == PARENS.decode()  # the raw header text
    for item, sent in zip(listing[1:], NASTY):
        status, one = as_json(server, "GET", f"{path}/{item['uid']}", auth=("alice", "alice"))
        assert status == 200 and one["headers"] == item["headers"]
        status, _, data = call(server, "GET", f"{path}/{item['uid']}/raw", auth=("alice", "alice"))
        assert status == 200 and data.endswith(sent)  # as sent, after the trace headers
    dashboard = curl("-i", "-u", "admin:admin",
                     f"http://127.0.0.1:{server.port('http', 'http')}/lab/dashboard").stdout
    assert status_of(dashboard) == [200] and b"<td>alice</td><td>INBOX</td>" in dashboard
    assert "Traceback" not in server.stderr()
