"""OpenAssistant message trees, nested (`replies`) or flat (`parent_message_id`), as dialogues.

Path rule: a tree branches into every user reply, since each is a real follow-up. Among the
assistant replies to one message it follows every reply that some user followed up on (a follow-up
only makes sense after the answer its author actually saw), and when no reply was followed up, only
the best-ranked one (lowest `rank`; unranked replies come after ranked ones, in file order).
Dialogues are the root-to-leaf paths of that pruned tree, so every user follow-up in the file
yields exactly one pair while dead-end alternative answers add no near-duplicate dialogues.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from induction.records import BadRecord, Dialogue, Role, make_dialogue, role_of

ID_FIELDS = ("message_id", "user_message_id", "task_message_id", "id")
"""Candidate own-id fields of a flat message; the one the parent ids point at wins."""

PARENT_FIELDS = ("parent_message_id", "parent_id")
"""Candidate parent-id fields of a flat message."""


@dataclass
class Node:
    """One message of a tree, validated."""

    id: str
    role: Role
    text: str
    rank: float | None
    children: list[Node] = field(default_factory=list)

    def rank_key(self, order: int) -> tuple[bool, float, int]:
        """Sort key: ranked before unranked, lower rank first, then file order."""
        return (self.rank is None, self.rank or 0.0, order)


def _rank(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _node(msg: Any, id_fields: tuple[str, ...] = ID_FIELDS) -> Node:
    """Validate one message's own fields (not its replies), its id read from `id_fields`.

    Raises:
        BadRecord: The message is deleted, has no id or text, or an unknown role.
    """
    if not isinstance(msg, dict):
        raise BadRecord("missing fields")
    if msg.get("deleted") is True:
        raise BadRecord("deleted message")
    msg_id = next((msg[f] for f in id_fields if msg.get(f) is not None), None)
    role = role_of(msg.get("role"))
    text = msg.get("text")
    if msg_id is None or role is None or not isinstance(text, str):
        raise BadRecord("missing fields")
    if not text.strip():
        raise BadRecord("empty text")
    return Node(str(msg_id), role, text, _rank(msg.get("rank")))


def _nested(msg: Any, skipped: Counter[str]) -> Node | None:
    """Build a node and its valid replies; an invalid message is counted and its subtree dropped."""
    try:
        node = _node(msg)
    except BadRecord as bad:
        skipped[str(bad)] += 1
        return None
    replies = msg.get("replies") or []
    for reply in replies if isinstance(replies, list) else []:
        child = _nested(reply, skipped)
        if child is not None:
            node.children.append(child)
    return node


def _leads_to_user(node: Node) -> bool:
    return any(c.role == "user" or _leads_to_user(c) for c in node.children)


def _followed(node: Node) -> list[Node]:
    """The children the path rule keeps, in file order."""
    answers = [c for c in node.children if c.role == "assistant"]
    kept = [c for c in answers if _leads_to_user(c)]
    if not kept and answers:
        kept = [min(enumerate(answers), key=lambda ia: ia[1].rank_key(ia[0]))[1]]
    return [c for c in node.children if c.role == "user" or c in kept]


def _paths(node: Node, prefix: tuple[Node, ...] = ()) -> Iterator[tuple[Node, ...]]:
    path = (*prefix, node)
    children = _followed(node)
    if not children:
        yield path
    for child in children:
        yield from _paths(child, path)


def tree_dialogues(root: Node, tree_id: str, repaired: Counter[str]) -> Iterator[Dialogue]:
    """Yield one dialogue per root-to-leaf path, with id `"<tree id>/<leaf message id>"`.

    Raises:
        BadRecord: The tree starts with an assistant message.
    """
    for path in _paths(root):
        raw = [(n.role, n.text, n.id) for n in path]
        yield make_dialogue(f"{tree_id}/{path[-1].id}", raw, repaired)


def nested_dialogues(
    records: list[tuple[int, Any]], skipped: Counter[str], repaired: Counter[str]
) -> Iterator[Dialogue]:
    """Read OASST tree rows `{message_tree_id, prompt: {message_id, text, role, rank, replies}}`."""
    for _, row in records:
        prompt = row.get("prompt") if isinstance(row, dict) else None
        root = _nested(prompt, skipped) if isinstance(prompt, dict) else None
        if root is None:
            if not isinstance(prompt, dict):
                skipped["missing fields"] += 1
            continue
        try:
            yield from tree_dialogues(root, str(row.get("message_tree_id") or root.id), repaired)
        except BadRecord as bad:
            skipped[str(bad)] += 1


def own_id_field(messages: list[Any]) -> str:
    """Pick the field holding a flat message's own id: the one most parent ids point at."""
    parents = {m.get(f) for m in messages if isinstance(m, dict) for f in PARENT_FIELDS} - {None}
    present = [f for f in ID_FIELDS if any(isinstance(m, dict) and f in m for m in messages)]
    if not present:
        return ID_FIELDS[0]
    return max(
        present, key=lambda f: len(parents & {m.get(f) for m in messages if isinstance(m, dict)})
    )


def flat_dialogues(
    records: list[tuple[int, Any]], skipped: Counter[str], repaired: Counter[str]
) -> Iterator[Dialogue]:
    """Read flat messages `{<id>, parent_message_id, text, role}`, rebuilding trees by parent id.

    A message below a skipped one is dropped with it; one whose parent is absent from the file is
    counted as `"missing parent"`.
    """
    messages = [m for _, m in records]
    id_field = own_id_field(messages)
    nodes: dict[str, Node] = {}
    parent_of: dict[str, str | None] = {}
    dropped: set[str] = set()
    for msg in messages:
        try:
            node = _node(msg, (id_field,))
        except BadRecord as bad:
            skipped[str(bad)] += 1
            if isinstance(msg, dict) and msg.get(id_field) is not None:
                dropped.add(str(msg[id_field]))
            continue
        parent = next((msg[f] for f in PARENT_FIELDS if msg.get(f) is not None), None)
        nodes[node.id] = node
        parent_of[node.id] = None if parent is None else str(parent)
    roots = []
    for node_id, parent in parent_of.items():
        if parent is None:
            roots.append(nodes[node_id])
        elif parent in nodes:
            nodes[parent].children.append(nodes[node_id])
        elif parent not in dropped:
            skipped["missing parent"] += 1
    for root in roots:
        try:
            yield from tree_dialogues(root, root.id, repaired)
        except BadRecord as bad:
            skipped[str(bad)] += 1
