"""Debian's Roundcube (roundcube-core, roundcube-sqlite3) on PHP's built-in web server,
on loopback, pointed at a lab's IMAP and SMTP: a private config directory and SQLite
database, nothing of the system's /etc/roundcube but its defaults.

    webmail = Roundcube.start(tmp, imap_port=..., smtp_port=...)
    webmail.url       # http://127.0.0.1:PORT/
    webmail.stop()

PHP's server, not Apache or nginx: roundcube-core alone would pull apache2 in through the
`php` package (tests/run names php8.2-cgi, the leanest alternative that satisfies it).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import read_until

INSTALL = Path("/var/lib/roundcube")  # Debian's tree: public_html is the web root
DEFAULTS = Path("/etc/roundcube/defaults.inc.php")

CONFIG = """<?php
$config = [];
$config['db_dsnw'] = 'sqlite:///{db}?mode=0600';
$config['imap_host'] = '127.0.0.1:{imap_port}';
$config['smtp_host'] = '127.0.0.1:{smtp_port}';
$config['smtp_user'] = '%u';
$config['smtp_pass'] = '%p';
$config['mail_domain'] = '{domain}';
$config['des_key'] = '{key}';
$config['temp_dir'] = '{temp}/';
$config['log_dir'] = '{logs}/';
$config['skin'] = 'elastic';
$config['plugins'] = [];
$config['enable_spellcheck'] = false;
$config['enable_installer'] = false;
// The tests log in more often than a person would: Roundcube's brute-force brake off.
$config['login_rate_limit'] = 0;
// What Roundcube says to the IMAP server, in logs/imap.log, for the failure messages.
$config['imap_debug'] = true;
$config['smtp_debug'] = true;
"""


def missing() -> str | None:
    """Why Roundcube cannot run here, or None."""
    if not (INSTALL / "public_html" / "index.php").exists() or not DEFAULTS.exists():
        return "needs Debian's roundcube-core and roundcube-sqlite3 (tests/run installs them)"
    if shutil.which("php") is None:
        return "needs PHP's command line (php8.2-cli, with roundcube-core; tests/run installs it)"
    return None


def free_port() -> int:
    """A port nobody listens on now; php -S reports a clash, and start() tries another."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def drain(process: subprocess.Popen, path: Path) -> None:
    assert process.stdout is not None  # stdout=PIPE
    with open(path, "ab", buffering=0) as out:
        while chunk := os.read(process.stdout.fileno(), 65536):
            out.write(chunk)


@dataclass
class Roundcube:
    process: subprocess.Popen
    port: int
    root: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @classmethod
    def start(cls, root: Path, imap_port: int, smtp_port: int,
              domain: str = "lab.test") -> Roundcube:
        config = root / "config"
        for name in ("config", "temp", "logs"):
            (root / name).mkdir(parents=True, exist_ok=True)
        (config / "defaults.inc.php").symlink_to(DEFAULTS)
        (config / "config.inc.php").write_text(CONFIG.format(
            db=root / "roundcube.db", imap_port=imap_port, smtp_port=smtp_port, domain=domain,
            key=secrets.token_hex(12), temp=root / "temp", logs=root / "logs"))
        last = ""
        for _ in range(5):
            port = free_port()
            process = subprocess.Popen(
                ["php", "-S", f"127.0.0.1:{port}", "-t", str(INSTALL / "public_html")],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,  # its workers outlive a TERM to it: stop() ends the group
                env={"PATH": "/usr/bin:/bin", "ROUNDCUBE_CONFIG_DIR": str(config),
                     "TZ": "UTC", "PHP_CLI_SERVER_WORKERS": "2"})
            lines: list[str] = []
            # PHP's ready line: "[date] PHP 8.2.x Development Server (http://...) started"
            if read_until(process, "", 15, lines) and "started" in lines[-1]:
                # The rest (one line per request) goes to a file, so the pipe never fills.
                threading.Thread(target=drain, args=(process, root / "logs" / "php.log"),
                                 daemon=True).start()
                return cls(process, port, root)
            process.kill()
            process.wait()
            last = "\n".join(lines)
        raise AssertionError(f"php -S did not start: {last}")

    def log(self, name: str) -> str:
        """One of Roundcube's logs (errors.log, imap.log, smtp.log), or ''."""
        path = self.root / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.process.wait(10)
