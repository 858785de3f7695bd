"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 sections 2 and 4), pure: sort.Item
lists in, the response's thread list out ("(3 6 (4 23)(44 7 96))")."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

from .sort import Item


@dataclass(eq=False)
class Node:
    item: Item | None = None  # None: a dummy (a message referred to, not present)
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)

    def adopt(self, child: Node) -> None:
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = self
        self.children.append(child)

    def above(self, other: Node) -> bool:
        """Whether this node is `other` or one of its ancestors."""
        node: Node | None = other
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False

    def first(self) -> Item | None:
        """The message this node stands for in sorting: its own, else its first child's."""
        if self.item is not None:
            return self.item
        return self.children[0].first() if self.children else None


def _date(node: Node) -> tuple[float, int]:
    item = node.first()
    return (item.date, item.seq) if item is not None else (0.0, 0)


def ordered_subject(items: list[Item]) -> list[Node]:
    """Threads of messages with the same base subject: the earliest is the parent, the
    others its children, in sent-date order; threads by their first message's date."""
    threads: dict[str, Node] = {}
    for item in sorted(items, key=lambda i: (i.keys.subject, i.date, i.seq)):
        root = threads.get(item.keys.subject)
        if root is None:
            threads[item.keys.subject] = Node(item)
        else:
            root.adopt(Node(item))
    return sorted(threads.values(), key=_date)


def references(items: list[Item]) -> list[Node]:
    """RFC 5256's REFERENCES algorithm (Jamie Zawinski's): parents from References: and
    In-Reply-To:, dummies pruned, roots of one base subject gathered, siblings by date."""
    by_id: dict[str, Node] = {}
    nodes: list[Node] = []
    for item in sorted(items, key=lambda i: i.seq):
        mid = item.keys.message_id
        node = by_id.get(mid) if mid else None
        if node is None or node.item is not None:  # none, or a duplicate: a node of its own
            node = Node()
            if mid and mid not in by_id:
                by_id[mid] = node
        node.item = item
        nodes.append(node)
        refs = [by_id.setdefault(ref, Node()) for ref in item.keys.references]
        for parent, child in pairwise(refs):  # (1B) link the chain, never into a loop
            if child.parent is None and not child.above(parent):
                parent.adopt(child)
        # (1C) The last reference is the parent; a parent found before (from another
        # message's truncated References:) is dropped, and none without references.
        if node.parent is not None:
            node.parent.children.remove(node)
            node.parent = None
        if refs and not node.above(refs[-1]):
            refs[-1].adopt(node)
    roots = [n for n in {id(n): n for n in [*by_id.values(), *nodes]}.values()
             if n.parent is None]
    roots = _prune(roots, top=True)
    roots = _gather(roots)
    for root in roots:
        _sort(root)
    return sorted(roots, key=_date)


def _prune(nodes: list[Node], top: bool) -> list[Node]:
    """(4) Dummies without children go; a dummy's children take its place, except that
    several children of a dummy at the top stay under it."""
    out: list[Node] = []
    for node in nodes:
        node.children = _prune(node.children, top=False)
        for child in node.children:
            child.parent = node
        if node.item is None:
            if not node.children:
                continue
            if not top or len(node.children) == 1:
                for child in node.children:
                    child.parent = None if top else node.parent
                out.extend(node.children)
                continue
        out.append(node)
    return out


def _gather(roots: list[Node]) -> list[Node]:
    """(5) Roots with the same base subject become one thread."""
    def subject(node: Node) -> tuple[str, bool]:
        item = node.item if node.item is not None else node.children[0].item
        return (item.keys.subject, item.keys.reply) if item is not None else ("", False)

    table: dict[str, Node] = {}
    for node in roots:
        base, reply = subject(node)
        if not base:
            continue
        old = table.get(base)
        if old is None or (node.item is None and old.item is not None) or (
                old.item is not None and node.item is not None and subject(old)[1]
                and not reply):
            table[base] = node
    out: list[Node] = []
    for node in roots:
        base, reply = subject(node)
        target = table.get(base) if base else None
        if target is None or target is node:
            out.append(node)
            continue
        if target.item is None and node.item is None:
            for child in list(node.children):
                target.adopt(child)
        elif target.item is None:
            target.adopt(node)
        elif node.item is None:  # the dummy takes the message's place in the table
            node.adopt(target)
            out[out.index(target)] = node
            table[base] = node
        elif subject(node)[1] and not subject(target)[1]:
            target.adopt(node)
        else:
            dummy = Node()
            out[out.index(target)] = dummy
            dummy.adopt(target)
            dummy.adopt(node)
            table[base] = dummy
    return out


def _sort(node: Node) -> None:
    """(6) Siblings by sent date (a dummy by its first child's), then sequence."""
    for child in node.children:
        _sort(child)
    node.children.sort(key=_date)


def render(threads: list[Node], uid: bool) -> str:
    """The thread list of the THREAD response, in UIDs or sequence numbers."""
    return "".join(f"({_chain(node, uid)})" for node in threads)


def _number(item: Item, uid: bool) -> str:
    return str(item.uid if uid else item.seq)


def _chain(node: Node, uid: bool) -> str:
    """A node and its only children in a row ("3 6"), then several children each in
    parentheses ("(4 23)(44 7 96)"); a dummy (at the top only) shows just its children."""
    parts = [] if node.item is None else [_number(node.item, uid)]
    while node.item is not None and len(node.children) == 1:
        only = node.children[0]
        if only.item is None:
            break
        node = only
        parts.append(_number(only.item, uid))
    if node.children:
        parts.append("".join(f"({_chain(child, uid)})" for child in node.children))
    return " ".join(parts)
