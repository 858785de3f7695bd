"""The file tree an FTP session sees, mapped onto the store's directories.

A user sees their home as "/", the shared public area as "/public" (the home's own entry
of that name, if any, is hidden: "public" is a reserved name in the lab) and, in a class
team, the team's shared folder as "/TEAM" (the same hiding; no other team's is there). An
anonymous session sees the public area as "/". Every client path goes through
services.paths.resolve under one of these roots, and nothing else: no path names a file
outside them, whatever "..", links, separators or odd characters it holds.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pyftpdlib.filesystems import AbstractedFS

from .. import paths
from ..store import is_disk_full
from .upload import TEMP_PREFIX, Upload

T = TypeVar("T")

PUBLIC = "public"


class NoSpace(Exception):
    """A file operation found the disk full. Not an OSError, so that it passes pyftpdlib's
    `except OSError: 550` and the handler answers 452 (RFC 959: insufficient storage)."""


def _space(operation: Callable[[], T]) -> T:
    try:
        return operation()
    except OSError as error:
        if is_disk_full(error):
            raise NoSpace(error.strerror) from error
        raise


def _inside(root: str, real: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


class LabFS(AbstractedFS):
    """pyftpdlib's view of the files; `root` is the session's home from the authorizer."""

    def __init__(self, root: str, cmd_channel: Any) -> None:
        super().__init__(root, cmd_channel)
        self.home = Path(os.path.realpath(root))
        public = Path(os.path.realpath(cmd_channel.public_root))
        self.public = public if public != self.home else None  # None: anonymous session
        # the folders mounted at "/NAME": the public area, and the session's team's
        team = cmd_channel.authorizer.team_dir(cmd_channel.username) if self.public else None
        self.mounts = {PUBLIC: public} if self.public is not None else {}
        if team is not None:
            self.mounts[team.name] = Path(os.path.realpath(team))

    # --- client path <-> file system path

    def ftp2fs(self, ftppath: str) -> str:
        names = paths.parts(self.ftpnorm(ftppath))  # PathError: the handler answers 550
        if names and names[0] in self.mounts:
            return str(paths.resolve(self.mounts[names[0]], "/".join(names[1:])))
        return str(paths.resolve(self.home, "/".join(names)))

    def fs2ftp(self, fspath: str) -> str:
        real = os.path.realpath(self._real(fspath))
        for mount, root in self.mounts.items():
            if _inside(str(root), real):
                return "/" + mount + paths.relative(root, Path(real)).rstrip("/")
        if _inside(str(self.home), real):
            return paths.relative(self.home, Path(real))
        return "/"

    def validpath(self, path: str) -> bool:
        real = os.path.realpath(self._real(path))
        return _inside(str(self.home), real) or any(
            _inside(str(root), real) for root in self.mounts.values())

    def _real(self, path: str) -> str:
        """A mount point ("/public") joined under the home's path is the mounted folder."""
        normal = os.path.normpath(path)
        for mount, root in self.mounts.items():
            if normal == str(self.home / mount):
                return str(root)
        return path

    # --- operations that must not touch the process (cwd) or miss the mount

    def chdir(self, path: str) -> None:
        # pyftpdlib's chdir() changes the process's working directory: never in a server
        # that runs every protocol in one process.
        if not os.path.isdir(path):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        if not os.access(path, os.X_OK):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        self.cwd = self.fs2ftp(path)

    def open(self, filename: str, mode: str) -> Any:
        if mode in ("wb", "ab", "r+b"):  # STOR, APPE, REST+STOR (see upload.py)
            return _space(lambda: Upload(filename, mode))
        return super().open(filename, mode)

    def mkstemp(self, suffix: str = "", prefix: str = "", dir: str | None = None,
                mode: str = "wb") -> Any:
        """STOU: a unique name, reserved by pyftpdlib's own mkstemp, written as STOR."""
        def reserve() -> Upload:
            file = super(LabFS, self).mkstemp(suffix, prefix, dir, mode)
            file.close()
            return Upload(file.name, "wb", reserved=True)
        return _space(reserve)

    def mkdir(self, path: str) -> None:
        _space(lambda: os.mkdir(path))

    def rename(self, src: str, dst: str) -> None:
        _space(lambda: os.rename(src, dst))

    def listdir(self, path: str) -> list[str]:
        names = [name for name in os.listdir(path) if not name.startswith(TEMP_PREFIX)]
        if self.mounts and os.path.realpath(path) == str(self.home):
            names = [name for name in names if name not in self.mounts] + list(self.mounts)
        return names

    listdirinfo = listdir

    def stat(self, path: str) -> os.stat_result:
        return os.stat(self._real(path))

    def lstat(self, path: str) -> os.stat_result:
        return os.lstat(self._real(path))

    def readlink(self, path: str) -> str:
        """What LIST shows after "name ->": the target as this session's own path, never
        the server's (pyftpdlib showed the data directory's absolute path). A link that
        leads out of the session's tree gets no target (the error makes LIST leave it)."""
        real = os.path.realpath(self._real(path))
        if not self.validpath(real):
            raise OSError(errno.EACCES, "link leads out of the tree")
        return self.fs2ftp(real)
