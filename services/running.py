"""Where a running lab says where it is, so that every command finds it, whoever asks.

`sudo protolab serve` and a later `protolab user add frank` (as a normal user) used to mean
two labs: another data directory, another port offset. Now each serve writes a record
(pid, data directory, bind address, offset) while it runs, and the other commands look for
one before falling back to their defaults:

    root's servers     /run/protolab/serve-PID.json          (readable by everyone)
    a user's servers   $XDG_RUNTIME_DIR/protolab/serve-PID.json, else
                       ~/.local/state/protolab/run/serve-PID.json
    (PROTOLAB_RUN_DIR replaces both: the tests give each lab its own)

A record whose process is gone is ignored (and removed when it is ours to remove).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

SYSTEM_RUN_DIR = Path("/run/protolab")


@dataclass(frozen=True)
class Running:
    pid: int
    data: str
    bind: str
    offset: int
    services: list[str]

    def describe(self) -> str:
        return f"the lab of pid {self.pid} (data {self.data}, port offset {self.offset})"


def _user_run_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "protolab"
    return Path(os.path.expanduser("~/.local/state/protolab/run"))


def run_dirs() -> list[Path]:
    """Where records are looked for, this user's own first."""
    if os.environ.get("PROTOLAB_RUN_DIR"):
        return [Path(os.environ["PROTOLAB_RUN_DIR"])]
    own = SYSTEM_RUN_DIR if os.geteuid() == 0 else _user_run_dir()
    return [own] + ([SYSTEM_RUN_DIR] if own != SYSTEM_RUN_DIR else [])


def record(data: Path, bind: str, offset: int, services: list[str]) -> Path | None:
    """Say that this process serves `data`; returns the record's path (None when no run
    directory could be written: the lab still serves, commands then need --data)."""
    directory = run_dirs()[0]
    item = Running(os.getpid(), str(data.resolve()), bind, offset, services)
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o755 if os.geteuid() == 0 else 0o700)
        path = directory / f"serve-{item.pid}.json"
        part = path.with_suffix(".part")
        part.write_text(json.dumps(asdict(item)))
        part.replace(path)
        return path
    except OSError:
        return None


def forget(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """Whether process PID lives (a zombie counts as alive until its parent reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's (root's) live process
    return True


def _trusted(path: Path) -> bool:
    """Records only from directories that root or this user own: nobody else can point
    this user's commands at a data directory of theirs."""
    try:
        owner = path.parent.stat().st_uid
    except OSError:
        return False
    return owner in (0, os.geteuid())


def running() -> list[Running]:
    """The labs that run now, this user's own first."""
    found: list[Running] = []
    for directory in run_dirs():
        for path in sorted(directory.glob("serve-*.json")) if directory.is_dir() else []:
            if not _trusted(path):
                continue
            try:
                item = Running(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue  # being written, or not ours
            if alive(item.pid):
                found.append(item)
            elif os.access(directory, os.W_OK):
                path.unlink(missing_ok=True)
    return found


def find(data: Path | None) -> Running | None:
    """The running lab for `data` (a resolved path), or, with `data` None, the lab that
    runs (this user's own first)."""
    labs = running()
    if data is not None:
        wanted = str(data.resolve())
        return next((lab for lab in labs if lab.data == wanted), None)
    return labs[0] if labs else None
