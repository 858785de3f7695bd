"""/~USER/: each user's public_html from the shared store (the files FTP and SMB see).

GET and HEAD for everyone; PUT (201 new, 204 replaced), DELETE and MKCOL with Basic auth
as that user. The path is percent-decoded once, here, then goes through services.paths,
the one path-safety rule of all file-serving protocols: whatever leaves the home is 403.
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..paths import PathError, resolve
from .auth import challenge, login
from .files import FileCache, serve
from .responses import HTML, error_page, send, send_no_body

if TYPE_CHECKING:
    from ..lab import Lab
    from .site import Router

READ = (b"GET", b"HEAD")
WRITE = (b"PUT", b"DELETE", b"MKCOL")
ALLOW = b"GET, HEAD, PUT, DELETE, MKCOL"
TEMP_PREFIX = ".upload-"


class UserWeb:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.cache = FileCache()

    def __call__(self, request: Any) -> Any:
        owner_raw, slash, rest = request.path[2:].partition(b"/")
        try:
            owner = urllib.parse.unquote_to_bytes(owner_raw).decode("utf-8")
            relative = urllib.parse.unquote_to_bytes(rest).decode("utf-8")
        except UnicodeDecodeError:
            return error_page(request, 400, "The path is not UTF-8.")
        if not owner or self.lab.store.users.get(owner) is None:
            return error_page(request, 404, "No such user.")
        if not slash:
            return _redirect(request, f"/~{urllib.parse.quote(owner)}/")
        root = self.lab.store.files.web(owner)
        try:
            target = resolve(root, relative)
        except PathError as error:
            request.channel.session.event("refused", str(error))
            return error_page(request, 403, "That path leaves the user's web space.")
        if request.method in READ:
            return self.read(request, root, target, relative)
        if request.method not in WRITE:
            return error_page(request, 405, "Not a method of this space.", {b"Allow": ALLOW})
        user = login(self.lab, request)
        if user is None:
            return challenge(request, f"web space of {owner}")
        if user != owner:
            return error_page(request, 403, f"Only {owner} may change this web space.")
        if target == Path(os.path.realpath(root)):
            return error_page(request, 403, "The web space itself cannot be changed.")
        if request.method == b"PUT":
            return self.put(request, target)
        if request.method == b"DELETE":
            return self.delete(request, target)
        return self.mkcol(request, target)

    def read(self, request: Any, root: Path, target: Path, relative: str) -> Any:
        try:
            st = target.stat()
        except (FileNotFoundError, NotADirectoryError):
            return error_page(request, 404, "No such file.")
        if target.is_dir():
            if not request.path.endswith(b"/"):
                return _redirect(request, request.path.decode("latin-1") + "/")
            index = target / "index.html"
            if index.is_file():
                return serve(request, index, index.stat(), self.cache)
            return self.listing(request, target, relative)
        if not target.is_file() or target.name.startswith(TEMP_PREFIX):
            return error_page(request, 404, "No such file.")
        return serve(request, target, st, self.cache)

    @staticmethod
    def listing(request: Any, directory: Path, relative: str) -> bytes:
        items = []
        for entry in sorted(directory.iterdir(), key=lambda p: p.name):
            if entry.name.startswith(TEMP_PREFIX):
                continue
            name = entry.name + ("/" if entry.is_dir() else "")
            items.append(f'<li><a href="{urllib.parse.quote(name)}">{html.escape(name)}</a></li>')
        title = html.escape("/" + relative.lstrip("/"))
        page = (f'<!doctype html><html><head><meta charset="utf-8"><title>Index of {title}'
                f"</title></head><body><h1>Index of {title}</h1><ul>{''.join(items)}</ul>"
                "</body></html>\n")
        return send(request, page.encode(), HTML)

    def put(self, request: Any, target: Path) -> Any:
        if target.is_dir():
            return error_page(request, 409, "A directory has that name.")
        if not target.parent.is_dir():
            return error_page(request, 409, "The parent directory does not exist (MKCOL it).")
        existed = target.exists()
        # Durable and whole: a temp file in the same directory, fsync, then rename over.
        fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                request.content.seek(0)
                shutil.copyfileobj(request.content, out, 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temp, 0o644)
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        request.channel.session.event("put", f"{target.name} {request.body_size} bytes")
        if existed:
            return send_no_body(request, 204)
        request.setHeader(b"Location", request.path)
        return send(request, b"created\n", b"text/plain; charset=utf-8", 201)

    @staticmethod
    def delete(request: Any, target: Path) -> Any:
        try:
            if target.is_dir() and not target.is_symlink():
                target.rmdir()
            else:
                target.unlink()
        except FileNotFoundError:
            return error_page(request, 404, "No such file.")
        except OSError:
            return error_page(request, 409, "The directory is not empty.")
        _fsync_dir(target.parent)
        request.channel.session.event("delete", target.name)
        return send_no_body(request, 204)

    @staticmethod
    def mkcol(request: Any, target: Path) -> bytes:
        if target.exists():
            return error_page(request, 405, "It exists already.", {b"Allow": ALLOW})
        try:
            target.mkdir()
        except FileNotFoundError:
            return error_page(request, 409, "The parent directory does not exist.")
        _fsync_dir(target.parent)
        return send(request, b"created\n", b"text/plain; charset=utf-8", 201)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _redirect(request: Any, to: str) -> bytes:
    request.setHeader(b"Location", to.encode())
    return error_page(request, 301, f"Moved to {to}")


def register(router: Router, lab: Lab) -> None:
    router.tree("/~", UserWeb(lab))
