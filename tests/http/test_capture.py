"""What the class sees: a capture of curl sessions that tshark dissects cleanly (HTTP, and
HTTPS decrypted with the lab's key log), and the portal rendered by headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import IN_CI, need
from tests.http.test_server import curl, status_of


def test_capture_of_curl_sessions_dissects_cleanly(lab, capture, tmp_path):
    keylog = tmp_path / "keys.log"
    server = lab.start(only="http", config=f'[tls]\nkeylog = "{keylog}"\n')
    port, tls_port = server.port("http", "http"), server.port("http", "https")
    running = capture(f"tcp port {port} or tcp port {tls_port}")
    base = f"http://127.0.0.1:{port}"
    page = base + "/lab/http/basic.html"
    decode = (f"tcp.port=={port},http", f"tcp.port=={tls_port},tls")
    wait_until_captured(running.path, base + "/lab/http/basic.html?warm-up", decode)
    curl("--http1.1", page, base + "/lab/http/long.html", "-o", "/dev/null", "-o", "/dev/null")
    curl("--http1.0", "-H", "Connection: keep-alive", page, page)
    curl("-u", "alice:alice", base + "/lab/http/protected/")
    curl("-F", "file=@" + str(Path(__file__)), base + "/lab/http/upload")
    assert status_of(curl("-i", "-H", 'If-None-Match: "x"', page).stdout) == [200]
    curl("--cacert", str(server.data / "tls" / "ca.crt"),
         f"https://localhost:{tls_port}/lab/http/basic.html")
    requests = running.read("http.request && !(http.request.uri contains \"warm-up\")",
                            "http.request.method", "http.request.uri", keylog=keylog,
                            decode_as=decode)
    methods = [line.split("\t")[0] for line in requests]
    assert methods.count("GET") == 7 and methods.count("POST") == 1
    responses = running.read("http.response && !(http.response_for.uri contains \"warm-up\")",
                             "http.response.code", keylog=keylog, decode_as=decode)
    assert len(responses) == len(requests)
    # The HTTPS request was decrypted with the key log, and dissected as HTTP too.
    assert running.read(f"tcp.port == {tls_port} && http.request", keylog=keylog,
                        decode_as=decode)
    assert running.read("http.authorization", keylog=keylog, decode_as=decode)
    assert running.problems(keylog=keylog, decode_as=decode) == []


def wait_until_captured(pcap: Path, url: str, decode: tuple[str, ...]) -> None:
    """Repeat a warm-up request until the capture file holds one: tcpdump says it listens
    a moment before its filter sees every packet on a busy machine."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        curl(url)
        seen = subprocess.run(["tshark", "-r", str(pcap), *(x for d in decode for x in ("-d", d)),
                               "-Y", 'http.request.uri contains "warm-up"'],
                              capture_output=True, text=True, timeout=60).stdout
        if seen.strip():
            return
        time.sleep(0.2)  # poll the file: there is no other signal from tcpdump
    raise AssertionError("the capture never saw the warm-up request")


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(not os.path.exists(CHROMIUM) and not IN_CI,
                    reason="needs Debian's chromium (tests/run installs it)")
def test_portal_screenshot_in_headless_chromium(lab, tmp_path):
    need("chromium")
    from PIL import Image

    server = lab.start(only="http")
    shot = tmp_path / "portal.png"
    profile = tmp_path / "profile"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
               "--window-size=1200,900", f"--screenshot={shot}",
               f"http://127.0.0.1:{server.port('http', 'http')}/"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert shot.exists(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 900)
    colours = image.getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 20  # text and tables, not a blank page
    # The services table's header background (#eef) is drawn: the page rendered its table.
    assert any(rgb == (0xEE, 0xEE, 0xFF) for _, rgb in colours)
    assert "GET / HTTP/1.1" in server.journal_until("http", "GET / HTTP/1.1")
    shutil.rmtree(profile, ignore_errors=True)
