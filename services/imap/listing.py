"""LIST and LSUB matching (RFC 3501 6.3.8-9, RFC 5258's selection and RETURN options),
as pure functions of the user's mailbox names: which names a command lists, and with which
attributes. The session sends the lines (and LIST-STATUS's STATUS lines)."""

from __future__ import annotations

from collections.abc import Mapping

from ..store.mail import INBOX, Mailbox
from . import utf7


def utf7_decode(pattern: str) -> str:
    """A pattern from the wire as Unicode; kept as sent when it is no modified UTF-7."""
    try:
        return utf7.decode(pattern)
    except utf7.UTF7Error:
        return pattern


def parents(names: set[str]) -> set[str]:
    """Every level above these names ("a/b/c" -> "a", "a/b")."""
    out: set[str] = set()
    for name in names:
        parts = name.split("/")
        out.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return out


def match(pattern: str, name: str) -> bool:
    """LIST wildcards: * matches anything, % anything but the delimiter; INBOX in any case.
    Dynamic programming over (pattern, name) positions: linear in each, so no pattern of
    many wildcards can make it backtrack for ever."""
    if pattern[:5].upper() == INBOX and name.startswith(INBOX):
        pattern = INBOX + pattern[5:]
    reach = [True] + [False] * len(name)  # reach[j]: the pattern so far matches name[:j]
    for char in pattern:
        nxt = [False] * (len(name) + 1)
        if char in "*%":
            ok = False
            for j in range(len(name) + 1):
                if char == "%" and j and name[j - 1] == "/":
                    ok = False  # % never spans a delimiter
                ok = ok or reach[j]
                nxt[j] = ok
        else:
            for j in range(1, len(name) + 1):
                nxt[j] = reach[j - 1] and name[j - 1] == char
        reach = nxt
    return reach[-1]


SELECT_OPTS = {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}
RETURN_OPTS = {"SUBSCRIBED", "CHILDREN", "STATUS", "SPECIAL-USE"}


def check_options(opts: list[str], returns: list[str]) -> str | None:
    """Why RFC 5258 makes these LIST options a BAD command, or None."""
    unknown = [o for o in opts if o not in SELECT_OPTS] + [r for r in returns
                                                            if r not in RETURN_OPTS]
    if unknown:
        return f"Unknown LIST option {unknown[0][:40]}"
    if "RECURSIVEMATCH" in opts and not set(opts) - {"RECURSIVEMATCH", "REMOTE"}:
        return "RECURSIVEMATCH needs another selection option"
    return None


def listed(mailboxes: Mapping[str, Mailbox], subscribed: set[str], reference: str,
           patterns: list[str], opts: list[str], returns: list[str], lsub: bool
           ) -> list[tuple[str, list[str], bool]]:
    """(name, attributes, CHILDINFO SUBSCRIBED) of every name the command lists, INBOX
    first, then by name. With RECURSIVEMATCH (RFC 5258 3.5), a name that matches but is
    not subscribed is listed, with CHILDINFO, when a subscribed name below it is not
    listed itself (it matches no pattern)."""
    candidates = subscribed if lsub or "SUBSCRIBED" in opts else set(mailboxes)
    fulls = [reference + utf7_decode(pattern) for pattern in patterns]
    childinfo: set[str] = set()
    if "RECURSIVEMATCH" in opts and "SUBSCRIBED" in opts:
        for name in set(mailboxes) | parents(subscribed):
            if name in subscribed or not any(match(full, name) for full in fulls):
                continue
            if any(other.startswith(name + "/") and not any(match(f, other) for f in fulls)
                   for other in subscribed):
                childinfo.add(name)
    lines: dict[str, list[str]] = {}
    for full in fulls:
        for name in sorted(candidates | parents(candidates) | childinfo):
            # A level above matching names that is not itself listed: RFC 3501 returns
            # it (\Noselect) for a "%" pattern; LIST-EXTENDED's SUBSCRIBED does not.
            gap = name not in candidates and name not in childinfo
            if (gap and ("%" not in full or "SUBSCRIBED" in opts)) or not match(full, name):
                continue
            mailbox = mailboxes.get(name)
            if "SPECIAL-USE" in opts and not (mailbox and mailbox.special_use):
                continue
            attrs: list[str] = []
            if gap or (mailbox is not None and mailbox.noselect):
                attrs.append("\\Noselect")
            elif mailbox is None and not lsub and name not in childinfo:
                attrs.append("\\NonExistent")
            if not lsub:
                has = any(other.startswith(name + "/") for other in mailboxes)
                attrs.append("\\HasChildren" if has else "\\HasNoChildren")
                if mailbox is not None and mailbox.special_use:
                    attrs.append(mailbox.special_use)
                if name in subscribed and ("SUBSCRIBED" in opts or "SUBSCRIBED" in returns):
                    attrs.append("\\Subscribed")
            lines[name] = list(dict.fromkeys(attrs))
    return [(name, lines[name], name in childinfo)
            for name in sorted(lines, key=lambda n: (n != INBOX, n))]
