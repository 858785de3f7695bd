"""The file an FTP upload writes, and what becomes of it when the upload does not complete.

- STOR writes a hidden temporary file in the target's directory; only a complete upload,
  on disk (fsync), is renamed onto the name. An incomplete one (disk full, ABOR, a data
  connection reset, the control connection gone) is deleted, and a file that had the name
  before is left as it was: no partial file ever looks complete.
- APPE appends in place; an incomplete append is cut back to the file's size before it.
- STOU reserves its unique name (empty), then writes as STOR does; an incomplete one
  removes the name too.
- REST n, then STOR, resumes in place from n; what arrived is kept (the point of REST):
  the client resumes again from SIZE.

A data connection closed normally (FIN) is the end of a stream-mode upload (RFC 959): a
client that stops mid-file that way has, for FTP, sent a complete shorter file.
"""

from __future__ import annotations

import os
import secrets

from ..store.files import TEMP_PREFIX


def _fsync_directory(path: str) -> None:
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class Upload:
    """A file object for pyftpdlib's data channel (write, seek, name, close), unbuffered so
    that a write error (ENOSPC) surfaces at the write that caused it, with commit() for a
    complete upload; close() without commit() is an abandoned one."""

    def __init__(self, path: str, mode: str, reserved: bool = False) -> None:
        """mode: pyftpdlib's ("wb", "ab", "r+b"); reserved: STOU's empty file at `path`,
        removed when the upload is abandoned."""
        self.name = path  # what pyftpdlib journals and reports
        self._reserved = reserved
        self._temp = ""
        self._restore = -1  # APPE: the size to cut back to when abandoned
        if os.path.isdir(path):
            raise IsADirectoryError(21, os.strerror(21), path)
        if mode == "wb":
            self._temp = os.path.join(os.path.dirname(path),
                                      TEMP_PREFIX + secrets.token_hex(8))
            self._fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        elif mode == "ab":
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            self._restore = os.fstat(self._fd).st_size
        else:  # "r+b": REST then STOR
            self._fd = os.open(path, os.O_WRONLY)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        return self._fd

    def seek(self, position: int) -> int:
        return os.lseek(self._fd, position, os.SEEK_SET)

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:  # os.write may write less than asked (pyftpdlib never checks)
            view = view[os.write(self._fd, view):]
        return len(data)

    def commit(self) -> None:
        """Durable before the 226: the data, then (renamed onto its name) the entry. An
        OSError leaves the upload abandoned (close() then cleans up)."""
        os.fsync(self._fd)
        if self._temp:
            os.replace(self._temp, self.name)
            self._temp = ""
            self._reserved = False
        _fsync_directory(self.name)
        self._restore = -1
        self._close_fd()

    def close(self) -> None:
        """Abandon what was not committed (see the module's rules)."""
        if self.closed:
            return
        try:
            if self._temp:
                os.unlink(self._temp)
                if self._reserved:
                    os.unlink(self.name)
            elif self._restore >= 0:
                os.ftruncate(self._fd, self._restore)
        finally:
            self._close_fd()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, -1
        os.close(fd)
