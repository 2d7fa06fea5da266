"""A definition's step tree: its nodes, their states in an instance, and its diagram.

Read from the definition's canonical plain form (``Definition.to_data()``,
``docs/definitions.md``), so it follows what a definition can say without
reaching into the core's step classes. :func:`diagram_svg` draws the tree on
the server as an SVG: a sequence top to bottom, parallel and choice branches
side by side, a map as a frame around the steps it runs per item, a child
workflow, a sleep and a signal wait each with a shape of its own, and a
compensation beside the step it undoes. With states, each node is coloured
by its state in an instance.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from markupsafe import Markup, escape

__all__ = ["Node", "apply_states", "diagram_svg", "nodes_of"]

#: The kinds of steps, by the field that names each in the plain form.
_KINDS: Final = (
    ("activity", "activity"),
    ("sleep", "sleep"),
    ("until", "sleep"),
    ("wait_signal", "signal"),
    ("workflow", "child"),
    ("parallel", "parallel"),
    ("map", "map"),
    ("choice", "choice"),
)
#: A step state's status (``docs/wire.md``, "Instance state") as the page names it.
_SHOWN: Final = {
    "scheduled": "running",
    "retry_wait": "retrying",
    "waiting": "waiting",
    "running": "running",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}
_ACTIVE: Final = frozenset({"running", "retrying", "waiting"})


@dataclass
class Node:
    """One step of a definition, and, once states are applied, where it stands."""

    id: str
    kind: str
    #: What it does, in a few words: the activity, the signal, the sleep...
    label: str
    compensate: str | None = None
    #: Inner sequences: (the branch's name or condition, its steps).
    branches: list[tuple[str, list[Node]]] = field(default_factory=list)
    state: str = "pending"
    note: str = ""


def nodes_of(steps: Sequence[Mapping[str, Any]]) -> list[Node]:
    """The nodes of a sequence of steps in plain form."""
    return [_node(step) for step in steps]


def _node(step: Mapping[str, Any]) -> Node:
    kind = next((kind for name, kind in _KINDS if name in step), "step")
    node = Node(id=str(step.get("id", "?")), kind=kind, label=kind)
    match kind:
        case "activity":
            node.label = str(step["activity"])
            compensate = step.get("compensate")
            if isinstance(compensate, Mapping):
                node.compensate = str(compensate.get("activity"))
        case "sleep":
            node.label = f"sleep {_seconds(step['sleep'])}" if "sleep" in step else "sleep until"
        case "signal":
            node.label = f"signal {step['wait_signal']}"
        case "child":
            node.label = f"child {step['workflow']}"
        case "parallel":
            node.label = "parallel"
            for branch in step["parallel"]:
                node.branches.append((str(branch.get("id", "")), nodes_of(branch["steps"])))
        case "map":
            node.label = f"each of {step['map']} ({step.get('concurrency', '?')} at once)"
            node.branches.append(("per item", nodes_of(step["steps"])))
        case "choice":
            node.label = "choice"
            for branch in step["choice"]:
                node.branches.append((f"when {branch.get('when', '')}", nodes_of(branch["steps"])))
            node.branches.append(("otherwise", nodes_of(step.get("default") or [])))
    return node


def _seconds(value: Any) -> str:
    if isinstance(value, int | float) and value >= 60 and value % 60 == 0:
        return f"{value / 60:g} min"
    return f"{value:g} s" if isinstance(value, int | float) else str(value)


def apply_states(
    nodes: Sequence[Node], steps: Mapping[str, Mapping[str, Any]], *, ended: bool
) -> None:
    """Set each node's state and note from an instance's step states (``InstanceInfo.steps``).

    A step inside a map runs once per item (keys ``id@i``): its node counts
    the copies by state, and its map says how many items are done. ``ended``:
    the instance is over, so a step never begun was skipped, not pending.
    """
    _apply(nodes, steps, ended=ended, per_item=False)


def _apply(
    nodes: Sequence[Node], steps: Mapping[str, Mapping[str, Any]], *, ended: bool, per_item: bool
) -> None:
    for node in nodes:
        if per_item:
            _apply_items(node, steps, ended=ended)
        else:
            _apply_one(node, steps, ended=ended)
        for _, inner in node.branches:
            _apply(inner, steps, ended=ended, per_item=per_item or node.kind == "map")


def _apply_one(node: Node, steps: Mapping[str, Mapping[str, Any]], *, ended: bool) -> None:
    found = steps.get(node.id)
    undo = steps.get(f"{node.id}~undo")
    if found is None:
        node.state = "not run" if ended else "pending"
    else:
        node.state = _SHOWN.get(str(found.get("status")), str(found.get("status")))
        attempt = found.get("attempt")
        if isinstance(attempt, int) and attempt > 1:
            node.note = f"attempt {attempt}"
        items = found.get("items")
        if isinstance(items, list):
            finished = found.get("finished_items", 0)
            node.note = f"{finished} of {len(items)} done"
        elif node.kind == "map" and node.state == "completed":
            node.note = "all items done"
    if undo is not None:
        status = str(undo.get("status"))
        node.state = (
            "compensated" if status == "completed" else f"compensation {_SHOWN.get(status, status)}"
        )


def _apply_items(node: Node, steps: Mapping[str, Mapping[str, Any]], *, ended: bool) -> None:
    prefix = f"{node.id}@"
    counts: Counter[str] = Counter()
    compensated = 0
    for key, step in steps.items():
        if not key.startswith(prefix):
            continue
        if key.endswith("~undo"):
            compensated += str(step.get("status")) == "completed"
            continue
        counts[_SHOWN.get(str(step.get("status")), str(step.get("status")))] += 1
    if compensated:
        counts["compensated"] = compensated
    node.note = ", ".join(f"{number} {state}" for state, number in sorted(counts.items()))
    active = [state for state in counts if state in _ACTIVE]
    if active:
        node.state = "running" if "running" in active else active[0]
    elif counts:
        node.state = max(counts, key=lambda state: counts[state])
    else:
        node.state = "not run" if ended else "pending"
        node.note = "per item; finished items are not kept"


def walk(nodes: Sequence[Node]) -> list[tuple[int, Node]]:
    """Every node with its depth, in reading order."""
    found: list[tuple[int, Node]] = []

    def visit(level: Sequence[Node], depth: int) -> None:
        for node in level:
            found.append((depth, node))
            for _, inner in node.branches:
                visit(inner, depth + 1)

    visit(nodes, 0)
    return found


# -- the diagram ---------------------------------------------------------------------

_BOX_W: Final = 190
_BOX_H: Final = 46
_GAP: Final = 22
_PAD: Final = 10
_HEAD: Final = 26
_UNDO_W: Final = 130

_Draw = Callable[[float, float], list[str]]


def diagram_svg(nodes: Sequence[Node], *, title: str, states: bool = False) -> Markup:
    """The step tree as an inline SVG, top to bottom; coloured by state if ``states``."""
    width, height, draw = _sequence(nodes, states)
    width, height = max(width, _BOX_W) + 2 * _PAD, height + 2 * _PAD
    parts = [
        f'<svg class="diagram" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/>'
        "</marker></defs>",
        *draw(_PAD, _PAD),
        "</svg>",
    ]
    return Markup("".join(parts))


def _sequence(nodes: Sequence[Node], states: bool) -> tuple[float, float, _Draw]:
    if not nodes:
        return (
            _BOX_W,
            24,
            lambda x, y: [
                f'<text class="empty" x="{x + 6:.1f}" y="{y + 16:.1f}">(no steps)</text>'
            ],
        )
    laid = [_layout(node, states) for node in nodes]
    width = max(w for w, _, _ in laid)
    height = sum(h for _, h, _ in laid) + _GAP * (len(laid) - 1)

    def draw(x: float, y: float) -> list[str]:
        parts: list[str] = []
        top = y
        for index, (w, h, inner) in enumerate(laid):
            left = x + (width - w) / 2
            parts += inner(left, top)
            if index + 1 < len(laid):
                mid = x + width / 2
                parts.append(
                    f'<line class="edge" x1="{mid:.1f}" y1="{top + h:.1f}" x2="{mid:.1f}" '
                    f'y2="{top + h + _GAP - 1:.1f}" marker-end="url(#arrow)"/>'
                )
            top += h + _GAP
        return parts

    return width, height, draw


def _layout(node: Node, states: bool) -> tuple[float, float, _Draw]:
    state = f" state-{node.state.replace(' ', '-')}" if states else ""
    tip = f"{node.id}: {node.label}" + (
        f" ({node.state}{', ' + node.note if node.note else ''})" if states else ""
    )
    if not node.branches:
        undo = node.compensate is not None
        width: float = _BOX_W + (_UNDO_W + _GAP if undo else 0)

        def leaf(x: float, y: float) -> list[str]:
            shape = (
                f'<rect class="node {node.kind}{state}" x="{x:.1f}" y="{y:.1f}" width="{_BOX_W}" '
                f'height="{_BOX_H}" rx="{_BOX_H / 2 if node.kind in ("sleep", "signal") else 6}"/>'
            )
            parts = [
                f'<g class="step"><title>{escape(tip)}</title>{shape}',
                f'<text class="node-id" x="{x + _BOX_W / 2:.1f}" y="{y + 19:.1f}" '
                f'text-anchor="middle">{escape(_clip(node.id, 24))}</text>',
                f'<text class="node-label" x="{x + _BOX_W / 2:.1f}" y="{y + 36:.1f}" '
                f'text-anchor="middle">{escape(_clip(node.label, 28))}</text></g>',
            ]
            if undo:
                ux = x + _BOX_W + _GAP
                parts += [
                    f'<line class="undo-edge" x1="{x + _BOX_W:.1f}" y1="{y + _BOX_H / 2:.1f}" '
                    f'x2="{ux:.1f}" y2="{y + _BOX_H / 2:.1f}"/>',
                    f'<g class="step"><title>compensation of {escape(node.id)}: '
                    f"{escape(node.compensate or '')}</title>",
                    f'<rect class="node undo" x="{ux:.1f}" y="{y + 6:.1f}" width="{_UNDO_W}" '
                    f'height="{_BOX_H - 12}" rx="4"/>',
                    f'<text class="node-label" x="{ux + _UNDO_W / 2:.1f}" '
                    f'y="{y + _BOX_H / 2 + 4:.1f}" text-anchor="middle">'
                    f"undo: {escape(_clip(node.compensate or '', 16))}</text></g>",
                ]
            return parts

        return width, _BOX_H, leaf

    branches = [(name, _sequence(inner, states)) for name, inner in node.branches]
    inner_w = sum(w for _, (w, _, _) in branches) + _GAP * (len(branches) - 1)
    inner_h = max(h for _, (_, h, _) in branches) + 18
    width = max(inner_w + 2 * _PAD, _BOX_W)
    height = _HEAD + inner_h + 2 * _PAD

    def group(x: float, y: float) -> list[str]:
        parts = [
            f'<g class="step"><title>{escape(tip)}</title>'
            f'<rect class="frame {node.kind}{state}" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" '
            f'height="{height:.1f}" rx="8"/>',
            f'<text class="frame-label" x="{x + 8:.1f}" y="{y + 18:.1f}">'
            f"{escape(node.id)}: {escape(_clip(node.label, 60))}"
            f"{escape(' (' + node.note + ')') if states and node.note else ''}</text></g>",
        ]
        left = x + (width - inner_w) / 2
        for name, (w, _, draw) in branches:
            parts.append(
                f'<text class="branch-label" x="{left + w / 2:.1f}" y="{y + _HEAD + _PAD + 8:.1f}" '
                f'text-anchor="middle">{escape(_clip(name, max(8, int(w / 6.5))))}</text>'
            )
            parts += draw(left, y + _HEAD + _PAD + 18)
            left += w + _GAP
        return parts

    return width, height, group


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "\u2026"
