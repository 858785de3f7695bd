"""HTTP on a full disk (a real tmpfs filled to the last byte): PUT and MKCOL to /~USER/ and
the API's writes answer 507 Insufficient Storage, store nothing partial, keep the old file
whole, and work again once space is freed, without a restart."""

from __future__ import annotations

import base64
import errno
import http.client
import os
from pathlib import Path
from types import SimpleNamespace

from services.http.userweb import UserWeb


def request(server, method: str, path: str, body: bytes = b"",
            auth: tuple[str, str] = ("alice", "alice")) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port("http", "http"), timeout=30)
    token = base64.b64encode(":".join(auth).encode()).decode()
    connection.request(method, path, body=body, headers={"Authorization": "Basic " + token})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, payload


def fill(disk) -> None:
    """small_disk.fill(), which can raise ENOSPC itself when its buffered file is closed
    on the full disk (the disk is full all the same)."""
    try:
        disk.fill()
    except OSError as error:
        assert error.errno == errno.ENOSPC


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".upload-")]


def test_put_and_mkcol_on_a_full_disk_answer_507_and_recover(lab, small_disk):
    server = lab.start(only="http", data=small_disk.data)
    web = small_disk.data / "homes" / "alice" / "public_html"
    old = b"the old page\n" * 100
    assert request(server, "PUT", "/~alice/page.html", old)[0] == 201
    big = os.urandom(2 * 1024 * 1024)

    fill(small_disk)
    status, payload = request(server, "PUT", "/~alice/page.html", big)
    assert status == 507 and b"nothing was stored" in payload
    assert (web / "page.html").read_bytes() == old  # the old file, whole
    assert request(server, "PUT", "/~alice/new.bin", big)[0] == 507
    assert not (web / "new.bin").exists() and leftovers(web) == []
    # A directory costs no data blocks on tmpfs, so MKCOL may still succeed; either way
    # the answer tells the truth.
    status, _ = request(server, "MKCOL", "/~alice/folder")
    assert (status, (web / "folder").is_dir()) in ((201, True), (507, False))
    # The same connection keeps answering (a 507 is an answer, not a dropped session).
    assert request(server, "GET", "/~alice/page.html")[1] == old
    status, _ = request(server, "POST", "/api/v1/users",
                        b'{"name": "carol", "password": "carol"}', auth=("admin", "admin"))
    assert status in (201, 507)

    small_disk.free()
    assert request(server, "PUT", "/~alice/page.html", big)[0] == 204
    assert (web / "page.html").read_bytes() == big
    assert request(server, "PUT", "/~alice/new.bin", big)[0] == 201
    assert request(server, "GET", "/~alice/new.bin")[1] == big
    assert leftovers(web) == []
    assert "services/http" not in server.stderr()  # no traceback of ours


def test_mkcol_answers_507_when_mkdir_finds_no_space():
    """tmpfs gives a directory without data blocks, so the kernel's ENOSPC for mkdir (ext4,
    xfs, a quota) is simulated here."""
    answers: dict[str, object] = {}
    fake = SimpleNamespace(
        setResponseCode=lambda code: answers.setdefault("code", code),
        setHeader=lambda name, value: None,
        channel=SimpleNamespace(session=SimpleNamespace(event=lambda *args: None)))

    class FullDir(type(Path())):
        def exists(self, **kwargs) -> bool:
            return False

        def mkdir(self, *args, **kwargs) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    body = UserWeb.mkcol(fake, FullDir("/nowhere/folder"))
    assert answers["code"] == 507 and b"disk is full" in body
