"""The protolab command.

Every error a user can cause is one line on stderr ("protolab: ...") and a non-zero exit:
2 for a wrong command line or config, 1 for anything else. Options also come from the
environment (PROTOLAB_CONFIG, PROTOLAB_DATA, PROTOLAB_ONLY, PROTOLAB_PORT_OFFSET,
PROTOLAB_BIND), for containers whose command line a CI system cannot set.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__, registry
from .config import ConfigError, LabConfig, example, load


class CLIError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _env(name: str) -> str | None:
    return os.environ.get(f"PROTOLAB_{name}") or None


def _config(args: argparse.Namespace) -> LabConfig:
    try:
        return load(Path(args.config) if args.config else None)
    except ConfigError as error:
        raise CLIError(str(error), 2) from None


def _data(args: argparse.Namespace) -> Path:
    from .lab import default_data_dir

    return Path(args.data) if args.data else default_data_dir()


def _names(only: str | None, config: LabConfig) -> list[str]:
    if not only:
        return [n for n in registry.names() if config.service(n).enabled]
    names = [n.strip().lower() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in registry.names()]
    if unknown:
        raise CLIError(f"unknown service {', '.join(unknown)} "
                       f"(known: {', '.join(registry.names()) or 'none yet'})", 2)
    return [n for n in registry.names() if n in names]  # table order


def _store(args: argparse.Namespace, config: LabConfig, create: bool = True) -> Any:
    from .store import Store

    data = _data(args)
    if not create and not (data / "lab.db").exists():
        raise CLIError(f"{data}: no lab here yet (run 'protolab serve' or 'protolab user add')")
    store = Store(data, keep_plaintext=config.auth.keep_plaintext)
    store.seed_users(config.users)
    return store


def _process_uptime() -> float | None:
    """Seconds since this process was exec'd (Linux), for the ready line."""
    try:
        with open("/proc/self/stat") as stat:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as uptime:
            now = float(uptime.read().split()[0])
        return max(0.0, now - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


# --- serve -----------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    started = time.monotonic()
    config = _config(args)
    names = _names(args.only, config)
    from .lab import Lab

    lab = Lab(config, _data(args), offset=args.port_offset, bind=args.bind)
    for name in names:
        lab.store.lock(name)
    lab.store.seed_users(config.users)
    lab.tls.context()  # the CA exists from the first start on, and TLS errors show now
    _print_table(lab, names)

    from twisted.internet import reactor

    from .serving import StartError
    from .twistedlog import start_logging

    start_logging()
    root = lab.build(names)
    outcome: dict[str, Any] = {"code": 0}

    def start() -> None:
        try:
            root.startService()
        except StartError as error:
            outcome.update(code=1, error=str(error))
            reactor.stop()
            return
        reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
        uptime = _process_uptime()
        elapsed = uptime if uptime is not None else time.monotonic() - started
        print(f"protolab ready in {elapsed:.2f} s: {' '.join(names) or 'no services'} "
              f"(port offset {lab.offset})", flush=True)

    reactor.callWhenRunning(start)
    reactor.run()
    lab.close()
    if outcome["code"]:
        raise CLIError(outcome["error"])
    return 0


def _print_table(lab: Any, names: list[str]) -> None:
    print(f"protolab {__version__}: {lab.config.source}, data {lab.data}")
    print(f"port offset {lab.offset} ({lab.offset_reason}); listening on {lab.bind}")
    print(f"{'SERVICE':<7} {'LISTENER':<11} {'ADDRESS':<22} {'TLS':<9} NOTE")
    for name in names:
        for listener in lab.listeners(name):
            address = f"{lab.bind}:{listener.port}/{listener.transport}"
            note = listener.note if listener.active else f"off: {listener.note}"
            print(f"{name:<7} {listener.name:<11} {address:<22} {listener.tls or '-':<9} {note}")
    sys.stdout.flush()


# --- init ------------------------------------------------------------------------------

def cmd_init(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    path = directory / "lab.toml"
    if path.exists() and not args.force:
        raise CLIError(f"{path} exists (use --force to overwrite)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(example())
    except OSError as error:
        raise CLIError(f"{path}: cannot write: {error.strerror}") from None
    print(f"wrote {path}: edit it, then run 'protolab serve --config {path}'")
    return 0


# --- user ------------------------------------------------------------------------------

def _password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return args.password
    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\n")
        if not line:
            raise CLIError("no password given (--password PW, or one line on standard input)", 2)
        return line
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise CLIError("the passwords differ", 2)
    return first


def cmd_user(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.action == "add":
        store = _store(args, config)
        store.users.add(args.name, _password(args))
        print(f"added {args.name}")
    elif args.action == "list":
        store = _store(args, config, create=False)
        users = store.users.list()
        if args.json:
            print(json.dumps([{"name": u.name, "created": u.created} for u in users]))
        for user in [] if args.json else users:
            boxes = store.mail.mailboxes(user.name)
            count = sum(store.mail.status(b.id).messages for b in boxes)
            print(f"{user.name:<16} {count:>5} messages in {len(boxes)} mailboxes")
    elif args.action == "passwd":
        _store(args, config, create=False).users.set_password(args.name, _password(args))
        print(f"changed the password of {args.name}")
    elif args.action == "del":
        store = _store(args, config, create=False)
        store.users.delete(args.name)
        if not args.keep_files:
            store.files.remove_home(args.name)
        print(f"deleted {args.name}, its mail" + ("" if args.keep_files else " and its files"))
    return 0


# --- check -----------------------------------------------------------------------------

def cmd_check(args: argparse.Namespace) -> int:
    from .check import ProbeTarget, run, table
    from .listeners import auto_offset

    config = _config(args)
    names = _names(args.only, config)
    requested = args.port_offset
    if requested is None and config.lab.port_offset >= 0:
        requested = config.lab.port_offset
    offset, _ = auto_offset(requested)
    target = ProbeTarget(args.host, config, offset, args.timeout)
    results = run(target, names)
    print(table(target, results))
    failed = [r.service for r in results if not r.ok]
    if failed:
        print(f"protolab check: {', '.join(failed)} did not answer", file=sys.stderr)
        return 1
    return 0


# --- journal ---------------------------------------------------------------------------

def cmd_journal(args: argparse.Namespace) -> int:
    from .journal import format_event

    directory = _data(args) / "journal"
    if not directory.is_dir():
        raise CLIError(f"{directory}: no journal yet")

    def show(line: str) -> None:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            return  # a line being written; the next read has it whole
        if not args.service or event.get("service") == args.service:
            print(format_event(event), flush=True)

    files = sorted(directory.glob("*.jsonl"))
    for path in files[-args.days:] if files else []:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                show(line)
    if not args.follow:
        return 0
    return _follow(directory, files[-1] if files else None, show)


def _follow(directory: Path, current: Path | None, show: Callable[[str], None]) -> int:
    position = current.stat().st_size if current else 0
    pending = ""
    try:
        while True:
            newest = max(directory.glob("*.jsonl"), default=None)
            if newest != current:  # a new day: read the new file from its start
                current, position, pending = newest, 0, ""
            if current is not None:
                with open(current, encoding="utf-8") as handle:
                    handle.seek(position)
                    chunk = handle.read()
                    position = handle.tell()
                pending += chunk
                *lines, pending = pending.split("\n")
                for line in lines:
                    show(line)
            time.sleep(0.25)  # polling a file: there is no ready signal to wait on
    except KeyboardInterrupt:
        return 0


# --- the parser ------------------------------------------------------------------------

def _offset(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if not 0 <= number <= 60000:
        raise argparse.ArgumentTypeError("must be 0..60000")
    return number


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="protolab", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"protolab {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(cmd: argparse.ArgumentParser, data: bool = True) -> None:
        cmd.add_argument("--config", default=_env("CONFIG"), metavar="FILE",
                         help="lab.toml (default: $PROTOLAB_CONFIG, else the embedded lab)")
        if data:
            cmd.add_argument("--data", default=_env("DATA"), metavar="DIR",
                             help="data directory (default: $PROTOLAB_DATA, else "
                                  "~/.local/share/protolab)")

    env_offset = _env("PORT_OFFSET")
    serve = sub.add_parser("serve", help="run the lab")
    common(serve)
    serve.add_argument("--only", default=_env("ONLY"), metavar="NAMES",
                       help="comma-separated services (default: all enabled)")
    serve.add_argument("--port-offset", type=_offset, metavar="N",
                       default=_offset(env_offset) if env_offset else None,
                       help="add N to every port (default: 0 if this process may bind ports "
                            "below 1024, else 3000)")
    serve.add_argument("--bind", default=_env("BIND"), metavar="ADDR",
                       help="listen on this address (default: [lab] bind, 0.0.0.0)")
    serve.set_defaults(func=cmd_serve)

    init = sub.add_parser("init", help="write a commented example lab.toml")
    init.add_argument("directory", nargs="?", default=".", metavar="DIR")
    init.add_argument("--force", action="store_true", help="overwrite an existing lab.toml")
    init.set_defaults(func=cmd_init)

    user = sub.add_parser("user", help="add, list, re-password and delete users")
    user_sub = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("add", "add a user"), ("passwd", "set a user's password")):
        cmd = user_sub.add_parser(action, help=text)
        common(cmd)
        cmd.add_argument("name")
        cmd.add_argument("--password", metavar="PW",
                         help="the password (default: ask, or one line on standard input)")
    listing = user_sub.add_parser("list", help="list users")
    common(listing)
    listing.add_argument("--json", action="store_true")
    delete = user_sub.add_parser("del", help="delete a user, its mail and its files")
    common(delete)
    delete.add_argument("name")
    delete.add_argument("--keep-files", action="store_true", help="keep DATA/homes/NAME")
    user.set_defaults(func=cmd_user)

    check = sub.add_parser("check", help="speak each protocol once; exit 0 if all answer")
    common(check, data=False)
    check.add_argument("--only", default=_env("ONLY"), metavar="NAMES")
    check.add_argument("--host", default="127.0.0.1")
    check.add_argument("--port-offset", type=_offset, metavar="N",
                       default=_offset(env_offset) if env_offset else None)
    check.add_argument("--timeout", type=float, default=3.0, metavar="S")
    check.set_defaults(func=cmd_check)

    journal = sub.add_parser("journal", help="show the journal of sessions")
    common(journal)
    journal.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    journal.add_argument("--service", metavar="S", help="only this service's events")
    journal.add_argument("--days", type=int, default=1, metavar="N",
                         help="how many days back to show (default 1)")
    journal.set_defaults(func=cmd_journal)

    from .labnet import add_commands as add_net_commands

    add_net_commands(sub, common)
    for name in registry.names():  # protocols may add commands of their own (protolab dns ...)
        add_commands = getattr(registry.module(name), "add_commands", None)
        if add_commands is not None:
            add_commands(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    from .store import DatabaseErrors

    try:
        args = parser().parse_args(argv)
    except argparse.ArgumentTypeError as error:  # an env default that does not parse
        print(f"protolab: {error}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except CLIError as error:
        print(f"protolab: {error}", file=sys.stderr)
        return error.code
    except DatabaseErrors as error:
        print(f"protolab: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
