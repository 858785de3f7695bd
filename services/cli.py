"""The protolab command.

Every error a user can cause is one line on stderr ("protolab: ...") and a non-zero exit:
2 for a wrong command line or config, 1 for anything else. Options also come from the
environment (PROTOLAB_CONFIG, PROTOLAB_DATA, PROTOLAB_ONLY, PROTOLAB_PORT_OFFSET,
PROTOLAB_BIND, PROTOLAB_STRICT), for containers whose command line a CI system cannot set.
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


def _data(args: argparse.Namespace, running: bool = True) -> Path:
    """--data, else $PROTOLAB_DATA, else the data directory of the lab that runs (when
    `running`: every command but serve), else the default (root's: /var/lib/protolab)."""
    from .lab import default_data_dir

    if args.data:
        return Path(args.data)
    if running and not os.environ.get("PROTOLAB_DATA"):
        from .running import find

        lab = find(None)
        if lab is not None:
            return Path(lab.data)
    return default_data_dir()


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


class Commands:
    """What a protocol package's `add_commands(commands)` (and the lab-wide ones') gets: a place for
    its own `protolab NAME ...` commands, and the helpers every command uses. A handler
    (`parser.set_defaults(func=...)`) takes the parsed arguments and returns the exit
    status; a user's error is `raise commands.Error("one line", code)` (2: usage)."""

    Error = CLIError

    def __init__(self, subparsers: Any, common: Callable[..., None]) -> None:
        self._subparsers, self._common = subparsers, common

    def add(self, name: str, help: str) -> argparse.ArgumentParser:
        """A new top-level command `protolab NAME`."""
        parser: argparse.ArgumentParser = self._subparsers.add_parser(name, help=help)
        return parser

    def common(self, parser: argparse.ArgumentParser, data: bool = True) -> None:
        """--config (and, with `data`, --data) as every command has them."""
        self._common(parser, data)

    def config(self, args: argparse.Namespace) -> LabConfig:
        """The lab config the command line names (a bad one is a one-line error)."""
        return _config(args)

    def data(self, args: argparse.Namespace) -> Path:
        """The data directory: --data, else the running lab's, else the default."""
        return _data(args)

    def store(self, args: argparse.Namespace, config: LabConfig, create: bool = True) -> Any:
        """The lab's store (`create=False`: an error when there is no lab there yet)."""
        return _store(args, config, create)


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

    lab = Lab(config, _data(args, running=False), offset=args.port_offset, bind=args.bind)
    lab.strict = args.strict
    if lab.bind_note:
        lab.say(lab.bind_note)
    try:
        lab.check_ports(names)
    except ValueError as error:
        raise CLIError(str(error), 2) from None
    for name in names:
        lab.store.lock(name)
    lab.store.seed_users(config.users)
    lab.tls.context()  # the CA exists from the first start on, and TLS errors show now

    from twisted.internet import reactor

    from . import running
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
        _record_failures(lab, names)
        _print_table(lab, names)
        failed = [name for name in names if lab.failures(name)]
        if failed and not lab.serving(names):
            outcome.update(code=1, error="no service could start")
            reactor.stop()
            return
        outcome["record"] = running.record(lab.data, lab.bind, lab.offset, names)
        uptime = _process_uptime()
        elapsed = uptime if uptime is not None else time.monotonic() - started
        print(f"protolab ready in {elapsed:.2f} s: {' '.join(names) or 'no services'} "
              f"(port offset {lab.offset})"
              + (f"; failed: {' '.join(failed)}" if failed else ""), flush=True)

    reactor.callWhenRunning(start)
    reactor.run()
    running.forget(outcome.get("record"))
    _record_failures(lab, names, stopping=True)
    lab.close()
    if outcome["code"]:
        raise CLIError(outcome["error"])
    return 0


def _record_failures(lab: Any, names: list[str], stopping: bool = False) -> None:
    """For `protolab check` and the portal, in the data directory (other processes)."""
    from .listeners import record_failures

    for name in names:
        try:
            record_failures(lab.data, name, {} if stopping else lab.failures(name))
        except OSError:
            pass  # a full disk: check still probes; the table and stderr said it


def _print_table(lab: Any, names: list[str]) -> None:
    """After start: what listens, and what does not (with why), never a listening row
    for a port the lab could not have."""
    from .listeners import endpoint, ephemeral_range, families

    print(f"protolab {__version__}: {lab.config.source}, data {lab.data}")
    print(f"port offset {lab.offset} ({lab.offset_reason}); listening on {lab.bind}"
          + (" (IPv4 and IPv6)" if lab.bind == "::" else f" ({lab.bind_note})" if lab.bind_note
             else ""))
    print(f"{'SERVICE':<7} {'LISTENER':<11} {'ADDRESS':<24} {'IP':<5} {'TLS':<9} NOTE")
    ports = []
    for name in names:
        for listener in lab.listeners(name):
            key = (name, listener.name)
            where = listener.address or lab.bind
            address = f"{endpoint(where, listener.port)}/{listener.transport}"
            ip = families(lab.sockets.get(key, [where]))
            if not listener.active:
                note = f"off: {listener.note}"
            elif key in lab.failed or name in lab.failed_services:
                line = lab.failed.get(key) or lab.failed_services[name]
                note = f"FAILED: {line.split(': ', 1)[-1]}"
            else:
                note = "; ".join(n for n in (lab.notes.get(key, ""), listener.note) if n)
                ports.append(listener.port)
            print(f"{name:<7} {listener.name:<11} {address:<24} {ip:<5} {listener.tls or '-':<9} "
                  f"{note}".rstrip())
    ephemeral = ephemeral_range()
    if ephemeral is not None:
        inside = sorted({p for p in ports if ephemeral[0] <= p <= ephemeral[1]})
        if inside:
            print(f"warning: ports {' '.join(map(str, inside))} are in the kernel's ephemeral "
                  f"range {ephemeral[0]}-{ephemeral[1]} (net.ipv4.ip_local_port_range): a "
                  f"client's socket can hold one at the next start; choose a smaller offset")
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
        _say_if_nobody_serves(_data(args))
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


def _say_if_nobody_serves(data: Path) -> None:
    from .running import find

    if find(data) is None:
        print(f"protolab: note: no lab is running on {data}; the change is there for the "
              "next 'protolab serve' on it", file=sys.stderr)


# --- check -----------------------------------------------------------------------------

def cmd_check(args: argparse.Namespace) -> int:
    from .check import ProbeTarget, hosts_for, run, table, with_failures
    from .listeners import effective_bind, failures, port_offset

    config = _config(args)
    names = _names(args.only, config)
    from .running import find

    data = _data(args)
    lab = find(data)  # the running lab on it says its offset and address
    offset, _ = port_offset(args.port_offset, config.lab.port_offset,
                            lab.offset if lab is not None else None)
    hosts = [args.host] if args.host is not None else hosts_for(
        lab.bind if lab is not None else effective_bind(config.lab.bind)[0])
    targets = [ProbeTarget(host, config, offset, args.timeout) for host in hosts]
    results = [with_failures(result, failures(data, result.service))
               for result in run(targets, names)]
    print(table(targets[0], results))
    failed = list(dict.fromkeys(r.service for r in results if not r.ok))
    if failed:
        which = lab.describe() if lab is not None else f"no lab runs on data {data}"
        print(f"protolab check: {', '.join(failed)} did not answer (asked {' and '.join(hosts)} "
              f"at port offset {offset}; {which})", file=sys.stderr)
        return 1
    return 0


# --- hosts -----------------------------------------------------------------------------

def cmd_hosts(args: argparse.Namespace) -> int:
    from . import hosts

    config = _config(args)
    dynamic: list[tuple[str, str]] = []
    if (_data(args) / "lab.db").exists():  # names from leases and `protolab dns add`
        dynamic = [(r.name, r.value) for r in _store(args, config).net.live_records()
                   if r.type in ("A", "AAAA")]
    print(hosts.render(config, hosts.entries(config, dynamic, args.address)), end="")
    return 0


# --- journal ---------------------------------------------------------------------------

def cmd_journal(args: argparse.Namespace) -> int:
    from .journal import format_event

    known = {*registry.names(), "lab"}  # "lab": the lab's own events (chores, start-up)
    if args.service and args.service not in known:
        raise CLIError(f"unknown service {args.service!r} (known: {', '.join(sorted(known))})", 2)
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
                             help="data directory (default: $PROTOLAB_DATA, else the "
                                  "running lab's, else ~/.local/share/protolab; root's: "
                                  "/var/lib/protolab)")

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
    serve.add_argument("--strict", action="store_true", default=bool(_env("STRICT")),
                       help="exit 1 when any listener cannot start (default: serve what "
                            "can start, and say what cannot)")
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
    common(check)  # the data directory: what the serve running there could not start
    check.add_argument("--only", default=_env("ONLY"), metavar="NAMES")
    check.add_argument("--host", default=None,
                       help="where to ask (default: the running lab's bind address, else "
                            "127.0.0.1)")
    check.add_argument("--port-offset", type=_offset, metavar="N",
                       default=_offset(env_offset) if env_offset else None)
    check.add_argument("--timeout", type=float, default=3.0, metavar="S")
    check.set_defaults(func=cmd_check)

    hosts = sub.add_parser("hosts", help="hosts-file lines for every name of the lab")
    common(hosts)
    hosts.add_argument("--address", metavar="A",
                       help="the lab's address as the machines that use the lines reach it "
                            "(default: [lab] address)")
    hosts.set_defaults(func=cmd_hosts)

    journal = sub.add_parser("journal", help="show the journal of sessions")
    common(journal)
    journal.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    journal.add_argument("--service", metavar="S", help="only this service's events")
    journal.add_argument("--days", type=int, default=1, metavar="N",
                         help="how many days back to show (default 1)")
    journal.set_defaults(func=cmd_journal)

    from .capture import add_commands as add_capture_commands
    from .classroom.commands import add_commands as add_class_commands
    from .faults import add_commands as add_fault_commands
    from .labnet import add_commands as add_net_commands

    commands = Commands(sub, common)
    add_net_commands(commands)
    add_capture_commands(commands)
    add_class_commands(commands)
    add_fault_commands(commands)
    for name in registry.names():  # protocols may add commands of their own (protolab dns ...)
        add_commands = getattr(registry.module(name), "add_commands", None)
        if add_commands is not None:
            add_commands(commands)
    _own_errors(sub)
    return p


def _own_errors(sub: Any) -> None:
    """Each command's parser answers for the arguments it does not know (`serve
    --port-ofset` shows serve's usage, not the top level's): main() asks args._parser."""
    for command in sub.choices.values():
        command.set_defaults(_parser=command)
        for action in command._subparsers._group_actions if command._subparsers else ():
            _own_errors(action)


def main(argv: list[str] | None = None) -> int:
    from .store import DatabaseErrors

    try:
        args, unknown = parser().parse_known_args(argv)
    except argparse.ArgumentTypeError as error:  # an env default that does not parse
        print(f"protolab: {error}", file=sys.stderr)
        return 2
    if unknown:
        args._parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.func(args)
    except BrokenPipeError:  # `protolab journal | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except CLIError as error:
        print(f"protolab: {error}", file=sys.stderr)
        return error.code
    except DatabaseErrors as error:
        print(f"protolab: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
