"""The portal at /: what this lab is, every service with its host, address, ports and TLS,
how to reach each with common clients (each protocol package's `clients`), the lab CA and
the mail autoconfig."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from ..listeners import families
from .labinfo import services
from .responses import send
from .style import html_page

if TYPE_CHECKING:
    from ..lab import Lab

TLS_TEXT = {"": "cleartext", "starttls": "STARTTLS", "implicit": "TLS"}
CA = "/ca.crt"


def render(lab: Lab, request: Any) -> bytes:
    config = lab.config
    domain = config.lab.domain
    user = config.users[0].name if config.users else "alice"
    rows = []
    for info in services(lab):
        state = ('<span class="up">running</span>' if info.running else
                 '<span class="down">not running</span>' if info.enabled else
                 '<span class="off">disabled</span>')
        names = html.escape(", ".join([info.host, *info.aliases]) or "-")
        for listener in info.listeners:
            cls = "" if listener.active else ' class="off"'
            note = html.escape(listener.note)
            failure = info.failure(listener)
            shown = (f'<span class="down">FAIL: {html.escape(failure)}</span>' if failure else
                     '<span class="off">off</span>' if not listener.active else state)
            clients = "<br>".join(f"<code>{html.escape(c)}</code>"
                                  for c in info.clients(listener, user, domain))
            address = "<br>".join(a for a in (info.address, info.address6) if a)
            ip = families(lab.sockets.get((info.name, listener.name), [listener.address or lab.bind]))
            rows.append(
                f"<tr{cls}><td>{info.name}</td><td>{names}</td><td>{address}</td>"
                f"<td>{listener.name}</td><td>{listener.port}/{listener.transport} {ip}</td>"
                f"<td>{TLS_TEXT.get(listener.tls, listener.tls)}</td><td>{shown}"
                f"{'<br>' + note if note else ''}</td><td>{clients}</td></tr>")
    offset = (f"<p>Ports are the standard ones plus {lab.offset} ({html.escape(lab.offset_reason)})."
              "</p>" if lab.offset else "")
    users = ", ".join(f"<code>{html.escape(u.name)}</code>" for u in config.users)
    body = f"""<h1>protolab &mdash; {domain}</h1>
<p>A network lab: small but real servers for HTTP, mail, DNS, DHCP, FTP and SMB that share
one store of users, mail and files. Point real clients at them, capture the traffic with
Wireshark, and compare the cleartext and TLS variants of each protocol.</p>
{offset}
<h2>Services</h2>
<table id="services"><tr><th>service</th><th>host names</th><th>address</th><th>listener</th>
<th>port</th><th>TLS</th><th>state</th><th>try it</th></tr>
{''.join(rows)}
</table>
<p>Users of this lab: {users or 'none yet'} (the default lab's passwords equal the names).</p>
<h2 id="names">The lab's names on your machine</h2>
<p>Names in <code>{domain}</code> resolve where the lab's DNS answers for them. Elsewhere:</p>
<ul>
<li>Any system, the hosts file: on the lab's machine, <code>protolab hosts --address
ADDRESS</code> prints a line per name (ADDRESS: the lab's address as your machine reaches
it); add them to <code>/etc/hosts</code> (Linux, macOS) or
<code>C:\\Windows\\System32\\drivers\\etc\\hosts</code> (Windows, as administrator).</li>
<li>Linux with systemd-resolved: <code>/etc/systemd/resolved.conf.d/protolab.conf</code> with
<code>[Resolve]</code>, <code>DNS=ADDRESS</code>, <code>Domains=~{domain}</code>, then
<code>sudo systemctl restart systemd-resolved</code>.</li>
<li>Windows, PowerShell as administrator: <code>Add-DnsClientNrptRule -Namespace
".{domain}" -NameServers "ADDRESS"</code>.</li>
</ul>
<h2>TLS: the lab certificate authority</h2>
<p>Every TLS port uses a certificate signed by this lab's own CA:
<a href="{CA}" download="protolab-ca.crt">download ca.crt</a>.</p>
<ul>
<li>curl and most command-line tools: <code>--cacert ca.crt</code> (or
<code>SSL_CERT_FILE=ca.crt</code>).</li>
<li>Debian/Ubuntu: <code>sudo cp ca.crt /usr/local/share/ca-certificates/protolab.crt &amp;&amp;
sudo update-ca-certificates</code>.</li>
<li>Firefox and Thunderbird: Settings &gt; Privacy &amp; Security &gt; Certificates &gt;
View Certificates &gt; Authorities &gt; Import, tick "identify websites" (and email).</li>
<li>Windows: double-click ca.crt &gt; Install Certificate &gt; Local Machine &gt;
"Trusted Root Certification Authorities". macOS: add it to the System keychain in
Keychain Access and set it to "Always Trust".</li>
</ul>
<h2>Mail clients</h2>
<p>Thunderbird's account wizard finds the settings for <code>{user}@{domain}</code> by itself
from <a href="/.well-known/autoconfig/mail/config-v1.1.xml">the autoconfig file</a>
(served as <code>autoconfig.{domain}/mail/config-v1.1.xml</code> too).</p>
<h2>Exercises</h2>
<ul>
<li><a href="/lab/http/basic.html">basic.html</a>: a small page with Last-Modified and ETag;
reload it to see a conditional GET answered 304.</li>
<li><a href="/lab/http/long.html">long.html</a>: a page larger than one TCP segment.</li>
<li><a href="/lab/http/embedded.html">embedded.html</a>: images from two host names.</li>
<li><a href="/lab/http/protected/">protected/</a>: HTTP Basic authentication (lab users).</li>
<li><a href="/lab/http/form">form</a>: a login form sent in cleartext.</li>
<li><a href="/lab/http/upload">upload</a>: upload a file; the answer is its size and SHA-256.</li>
<li><a href="/~{user}/">/~{user}/</a>: a user's web space (the same files FTP and SMB see);
<code>curl -u {user}:{user} -T file http://www.{domain}/~{user}/file</code> puts one.</li>
</ul>
<h2>For CI and teachers</h2>
<p>The JSON API is under <a href="/api/v1/">/api/v1/</a>
(<a href="/api/v1/openapi.json">OpenAPI document</a>); the live
<a href="/lab/dashboard">dashboard</a> needs the administrator's login.</p>"""
    return send(request, html_page(f"protolab: {domain}", body).encode())
