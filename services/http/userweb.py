"""/~USER/: each user's public_html from the shared store (the files FTP and SMB see).

GET and HEAD for everyone; PUT (201 new, 204 replaced), DELETE and MKCOL with Basic auth
as that user. The path is percent-decoded once, here, then goes through services.paths,
the one path-safety rule of all file-serving protocols: whatever leaves the home is 403.

/~TEAM/: a class team's shared folder (DATA/teams/TEAM, the one SMB and FTP show its
members), every method for its members only, with Basic auth as lab users: anyone else is
asked to log in (401) or refused (403). A team never has a user's name (the roster sees
to it), so the two never meet; team folders never take the fast path, which serves
without asking who.
"""

from __future__ import annotations

import heapq
import html
import os
import shutil
import stat
import tempfile
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet.threads import deferToThread
from twisted.web.server import NOT_DONE_YET

from ..paths import PathError, resolve
from ..store import is_disk_full
from ..store.files import TEMP_PREFIX
from .auth import challenge, login, www_authenticate
from .channel import Refusal
from .files import SMALL, FileCache, serve
from .responses import HTML, Body, error_page, redirect, send, send_no_body
from .style import html_page

if TYPE_CHECKING:
    from ..lab import Lab
    from .site import Router

READ = (b"GET", b"HEAD")
WRITE = (b"PUT", b"DELETE", b"MKCOL")
ALLOW = b"GET, HEAD, PUT, DELETE, MKCOL"
MAX_LOCATED = 10_000
MAX_LISTED = 1000  # entries a directory listing shows
# A student's page runs in a sandbox: an origin of its own, not the lab site's. Without it,
# a script in /~mallory/ viewed by the teacher would read the API and the dashboard with
# the teacher's Basic credentials (same origin), and post to them. Scripts, forms and
# popups still work, so students can practise them.
SANDBOX = {b"Content-Security-Policy": b"sandbox allow-scripts allow-forms allow-popups",
           b"X-Content-Type-Options": b"nosniff"}


class UserWeb:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.cache = FileCache(headers=SANDBOX)
        # user -> public_html, for users known to exist: a request must not cost a query
        # and a mkdir. Forgotten when any process changes the users (store.subscribe).
        self.roots: dict[str, Path] = {}
        self.located: dict[bytes, tuple[Path, tuple[int, ...]]] = {}  # see fast()
        lab.store.subscribe("user", lambda topics: self.forget())

    def forget(self) -> None:
        self.roots.clear()
        self.located.clear()

    def root(self, owner: str) -> Path | None:
        root = self.roots.get(owner)
        if root is None:
            if self.lab.store.users.get(owner) is None:
                return None
            root = self.roots[owner] = self.lab.store.files.web(owner)
        return root

    @staticmethod
    def split(path: bytes) -> tuple[str, bool, str]:
        """(owner, whether a "/" follows the name, the path below it), percent-decoded
        once; UnicodeDecodeError if not UTF-8."""
        owner_raw, slash, rest = path[2:].partition(b"/")
        return (urllib.parse.unquote_to_bytes(owner_raw).decode("utf-8"), bool(slash),
                urllib.parse.unquote_to_bytes(rest).decode("utf-8"))

    def fast(self, path: bytes) -> Body | None:
        """The cached page for a GET of a small file at `path`, or None (the ordinary path
        then answers: directories, big files, errors).

        resolve() walks every directory of the path with lstat: most of a small request's
        time. So a path resolved once is remembered with the identity of the file it led
        to (device, inode, size, mtime); while a stat() of it finds that same file, the
        same bytes are served. Anything else - a new path, a file changed, a link swapped
        in (stat follows it to another inode) - goes through resolve() again."""
        known = self.located.get(path)
        if known is not None:
            target, identity = known
            try:
                st = os.stat(target)
            except OSError:
                st = None
            if st is not None and _identity(st) == identity:
                try:
                    return self.cache.get(target, st)
                except OSError:
                    return None
        try:
            owner, slash, relative = self.split(path)
        except UnicodeDecodeError:
            return None
        root = self.root(owner) if owner and slash else None
        if root is None:
            return None
        try:
            target = resolve(root, relative)
            st = os.stat(target)
            if (not stat.S_ISREG(st.st_mode) or st.st_size > SMALL
                    or target.name.startswith(TEMP_PREFIX)):
                return None
            body = self.cache.get(target, st)
        except (PathError, OSError):
            return None  # the ordinary path gives the error its answer
        if len(self.located) >= MAX_LOCATED:
            self.located.clear()
        self.located[path] = (target, _identity(st))
        return body

    def __call__(self, request: Any) -> Any:
        try:
            owner, slash, relative = self.split(request.path)
        except UnicodeDecodeError:
            return error_page(request, 400, "The path is not UTF-8.")
        root = self.root(owner) if owner else None
        team = root is None and owner in self.lab.store.roster.teams()
        if team:
            refused = self.refuse_outsider(request, owner)
            if refused is not None:
                return refused
            root = self.lab.store.files.team(owner)
        if root is None:
            return error_page(request, 404, "No such user.")
        if not slash:
            return redirect(request, f"/~{urllib.parse.quote(owner)}/")
        try:
            target = resolve(root, relative)
        except PathError as error:
            request.channel.session.event("refused", str(error))
            return error_page(request, 403, "That path leaves the user's web space.")
        if request.method in READ:
            return self.read(request, root, target, relative)
        if request.method not in WRITE:
            return error_page(request, 405, "Not a method of this space.", {b"Allow": ALLOW})
        if not team:
            user = login(self.lab, request)
            if user is None:
                return challenge(request, realm(owner))
            if user != owner:
                return error_page(request, 403, f"Only {owner} may change this web space.")
        if target == Path(os.path.realpath(root)):
            return error_page(request, 403, "The web space itself cannot be changed.")
        if request.method == b"PUT":
            return self.put(request, target)
        if request.method == b"DELETE":
            return self.delete(request, target)
        return self.mkcol(request, target)

    def refuse_outsider(self, request: Any, team: str) -> bytes | None:
        """None for a member of `team` (logged in with Basic auth); else the answer."""
        user = login(self.lab, request)
        if user is None:
            return challenge(request, realm(team))
        if user not in self.lab.store.roster.teams().get(team, ()):
            return error_page(request, 403, f"Only the members of {team} may use its folder.")
        return None

    def read(self, request: Any, root: Path, target: Path, relative: str) -> Any:
        try:
            st = os.stat(target)
            if stat.S_ISDIR(st.st_mode):
                if not request.path.endswith(b"/"):
                    return redirect(request, request.path.decode("latin-1") + "/")
                try:  # index.html too may be a link that leads out
                    index = resolve(root, relative + "/index.html")
                except PathError as error:
                    request.channel.session.event("refused", str(error))
                    return error_page(request, 403, "That path leaves the user's web space.")
                if index.is_file():
                    return serve(request, index, index.stat(), self.cache)
                return self.listing(request, target)
            if not stat.S_ISREG(st.st_mode) or target.name.startswith(TEMP_PREFIX):
                return error_page(request, 404, "No such file.")
            return serve(request, target, st, self.cache)
        except (FileNotFoundError, NotADirectoryError):
            return error_page(request, 404, "No such file.")
        except PermissionError:  # e.g. a file another protocol left unreadable to us
            return error_page(request, 403, "This file may not be read.")

    @staticmethod
    def listing(request: Any, directory: Path) -> Any:
        """The directory's page, made in a thread: reading a directory of a hundred
        thousand names takes a few hundred milliseconds, which the reactor (every
        session of every protocol) must not wait for."""
        finished = request.notifyFinish()  # fires (errback) if the client goes first
        gone: list[bool] = []
        finished.addErrback(lambda _: gone.append(True))

        def answer(page: bytes) -> None:
            if not gone:
                request.setHeader(b"Content-Length", b"%d" % len(page))
                request.write(send(request, page, HTML))
                request.finish()

        def failed(failure: Any) -> None:
            if gone:
                return
            if failure.check(FileNotFoundError, NotADirectoryError):
                body = error_page(request, 404, "No such directory.")
            elif failure.check(PermissionError):
                body = error_page(request, 403, "This directory may not be read.")
            else:
                request.processingFailed(failure)
                return
            request.setHeader(b"Content-Length", b"%d" % len(body))
            request.write(body)
            request.finish()

        # Titled by the URL path (/~alice/sub/): the web space's own root is not "/".
        where = urllib.parse.unquote(request.path.decode("ascii", "replace"))
        deferToThread(listing_page, directory, where).addCallbacks(answer, failed)
        return NOT_DONE_YET

    def put(self, request: Any, target: Path) -> Any:
        if target.is_dir():
            return error_page(request, 409, "A directory has that name.")
        if not target.parent.is_dir():
            return error_page(request, 409, "The parent directory does not exist (MKCOL it).")
        existed = target.exists()
        try:
            _write_whole(request.content, target)
        except OSError as error:
            if not is_disk_full(error):
                raise
            return insufficient_storage(request, target)
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
        except OSError as error:
            if not is_disk_full(error):
                raise
            return insufficient_storage(request, target)
        _fsync_dir(target.parent)
        return send(request, b"created\n", b"text/plain; charset=utf-8", 201)


def _write_whole(source: Any, target: Path) -> None:
    """`source` (a file object, from its start) as `target`, durable and whole: a temp file
    in the same directory, fsync, then renamed over, so readers see the old or the new file
    whole. On any error the temp file is gone and `target` is as it was."""
    fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            source.seek(0)
            shutil.copyfileobj(source, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def insufficient_storage(request: Any, target: Path) -> bytes:
    """507: nothing of the request was stored (the session goes on)."""
    request.channel.session.event("disk-full", target.name)
    return error_page(request, 507, "The disk is full: nothing was stored. "
                      "Free some space and try again.")


def listing_page(directory: Path, where: str) -> bytes:
    """The first MAX_LISTED names, sorted, and how many there are: one scandir pass (the
    kind of entry comes with the name: no stat per entry) and a bounded heap, so the page
    stays a page however big the directory."""
    count = 0
    with os.scandir(directory) as entries:
        shown = heapq.nsmallest(MAX_LISTED, (
            entry.name + ("/" if entry.is_dir() else "") for entry in entries
            if not entry.name.startswith(TEMP_PREFIX) and (count := count + 1)))
    items = "".join(f'<li><a href="{urllib.parse.quote(name)}">{html.escape(name)}</a></li>'
                    for name in shown)
    note = (f"<p>{count} entries; the first {MAX_LISTED} by name are shown (fetch a file by "
            "its name, or list it over FTP or SMB).</p>" if count > MAX_LISTED else "")
    title = html.escape(where)
    return html_page(f"Index of {title}",
                     f"<h1>Index of {title}</h1>{note}<ul>{items}</ul>").encode()


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)



def realm(owner: str) -> str:
    return f"web space of {owner}"  # a team's folder too: /~TEAM/ is where both live


def register(router: Router, lab: Lab) -> None:
    web = UserWeb(lab)

    def early_check(method: bytes, path: bytes, request: Any) -> None:
        """A client that waits for "100 Continue" before sending a PUT body learns at once
        that its credentials will not do, instead of sending the whole file first."""
        expect = request.requestHeaders.getRawHeaders(b"Expect", [b""])[0].lower()
        if method not in WRITE or expect != b"100-continue":
            return None
        try:
            owner, _, _ = web.split(path.partition(b"?")[0])
        except UnicodeDecodeError:
            return None
        members = lab.store.roster.teams().get(owner) if web.root(owner) is None else (owner,)
        if members is None:
            return None  # the ordinary path answers 404
        user = login(lab, request)
        if user is None:
            raise Refusal(401, "this needs the owner's name and password (Basic)",
                          www_authenticate(realm(owner)))
        if user not in members:
            raise Refusal(403, f"only {owner} may change this web space" if members == (owner,)
                          else f"only the members of {owner} may use its folder")
        return None

    router.body_sink("/~", early_check)
    router.tree("/~", web)
    router.fast_tree("/~", web.fast)
