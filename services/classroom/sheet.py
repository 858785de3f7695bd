"""The credentials sheet: one slip per student to cut out and hand over, as an HTML page
(print it from the browser, or to a PDF from its print dialogue: the print style lays
the slips out on A4, eight a page, each whole)."""

from __future__ import annotations

import hashlib
import html
import ssl
from pathlib import Path

from ..http.style import html_page
from .roster import Student

SLIP_STYLE = """
.slips{display:grid;grid-template-columns:repeat(auto-fill,minmax(20em,1fr));gap:.8em}
.slip{border:1px dashed #888;padding:.6em .9em;break-inside:avoid;page-break-inside:avoid}
.slip h2{margin:.1em 0 .4em;font-size:1.15em}
.slip dl{display:grid;grid-template-columns:auto 1fr;gap:.15em .8em;margin:0}
.slip dt{color:#555}.slip dd{margin:0;font-family:monospace;font-size:1.05em}
.slip .pw{font-weight:bold;letter-spacing:.08em}
.fp{font-family:monospace;font-size:.75em;word-break:break-all;color:#333}
@page{size:A4;margin:10mm}
@media print{
body{margin:0;padding:0;max-width:none;font-size:9.5pt;color:#000}
h1,.noprint{display:none}
.slips{grid-template-columns:1fr 1fr;grid-auto-rows:62mm;gap:4mm}
.slip{box-sizing:border-box;border:.3mm dashed #000;padding:3mm 4mm;overflow:hidden}
.slip h2{font-size:12pt}.slip dt{color:#000}.slip dd{font-size:10pt}
.fp{font-size:6.5pt;color:#000;margin:2mm 0 0}
}
"""
# Printed: A4, two slips across and four down (62 mm each, cut along the dashed lines),
# none split by a page break; the page's heading and note stay on screen.


def ca_fingerprint(ca_cert: Path) -> str:
    """SHA-256 of the lab CA (DER), as browsers and `openssl x509 -fingerprint` show it."""
    der = ssl.PEM_cert_to_DER_cert(ca_cert.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def render(students: list[Student], domain: str, hosts: dict[str, str], fingerprint: str,
           title: str = "Lab accounts") -> str:
    """The page. `hosts`: what a student types (label -> host name or address)."""
    e = html.escape
    where = "".join(f"<dt>{e(label)}</dt><dd>{e(value)}</dd>" for label, value in hosts.items())
    slips = []
    for student in sorted(students, key=lambda s: (s.team, s.name)):
        team = f"<dt>team</dt><dd>{e(student.team)}</dd>" if student.team else ""
        slips.append(
            f'<section class="slip"><h2>{e(student.name)}</h2><dl>'
            f"<dt>user name</dt><dd>{e(student.name)}</dd>"
            f'<dt>password</dt><dd class="pw">{e(student.password)}</dd>'
            f"<dt>mail</dt><dd>{e(student.name)}@{e(domain)}</dd>{team}{where}</dl>"
            f'<p class="fp">lab CA SHA-256: {e(fingerprint)}</p></section>')
    body = (f"<h1>{e(title)}</h1>"
            f'<p class="noprint">{len(students)} students. Print this page and cut along '
            "the dashed lines; the CA fingerprint lets a student check the certificate "
            "they install.</p>"
            f'<div class="slips">{"".join(slips)}</div>')
    return html_page(e(title), body, f"<style>{SLIP_STYLE}</style>")
