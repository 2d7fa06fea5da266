"""The web UI's pictures from data: step states on the tree, bars on the timeline, diagrams.

Pure functions of a definition's plain form, an instance's step states and
its history records (``docs/wire.md``), checked without a server.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from actors.core import load_definition
from actors.http.ui._steps import apply_states, diagram_svg, nodes_of, walk
from actors.http.ui._timeline import build_timeline, timeline_svg

ORDER = """
type: order
version: 1
steps:
  - {id: reserve, activity: reserve_stock, compensate: {activity: release_stock}}
  - id: deliver
    map: input.items
    concurrency: 4
    steps: [{id: ship, activity: ship, retry: {max_attempts: 3}}]
  - id: pick
    choice:
      - when: "input.fast"
        steps: [{id: rush, workflow: express}]
    default: [{id: nap, sleep: 5}]
  - {id: ok, wait_signal: approved}
"""


def _tree(
    steps: dict[str, dict[str, object]], *, ended: bool = False
) -> dict[str, tuple[str, str]]:
    nodes = nodes_of(load_definition(ORDER).to_data()["steps"])
    apply_states(nodes, steps, ended=ended)
    return {node.id: (node.state, node.note) for _, node in walk(nodes)}


def test_a_map_says_how_many_items_are_done_and_counts_its_copies() -> None:
    tree = _tree(
        {
            "reserve": {"status": "completed", "attempt": 1},
            "deliver": {"status": "running", "items": list(range(300)), "finished_items": 273},
            **{f"ship@{i}": {"status": "scheduled", "attempt": 1} for i in range(273, 298)},
            "ship@298": {"status": "retry_wait", "attempt": 2},
            "ship@299": {"status": "retry_wait", "attempt": 2},
        }
    )
    assert tree["deliver"] == ("running", "273 of 300 done")
    assert tree["ship"] == ("running", "2 retrying, 25 running")
    assert tree["reserve"] == ("completed", "")
    assert tree["ok"] == ("pending", "")


def test_compensated_steps_and_steps_never_run_once_it_ended() -> None:
    tree = _tree(
        {
            "reserve": {"status": "completed", "attempt": 2},
            "reserve~undo": {"status": "completed", "attempt": 1},
            "ok": {"status": "cancelled", "attempt": 1},
        },
        ended=True,
    )
    assert tree["reserve"] == ("compensated", "attempt 2")
    assert tree["ok"] == ("cancelled", "")
    assert tree["nap"] == ("not run", "")
    assert tree["deliver"] == ("not run", "")


def test_the_timeline_has_a_bar_per_attempt_wait_and_compensation() -> None:
    records = [
        {"seq": 1, "kind": "workflow.started", "at": 100.0, "detail": {}},
        {
            "seq": 2,
            "kind": "activity.scheduled",
            "at": 100.0,
            "detail": {"step": "reserve", "attempt": 1, "activity": "reserve_stock"},
        },
        {
            "seq": 3,
            "kind": "activity.failed",
            "at": 101.0,
            "detail": {"step": "reserve", "attempt": 1, "error": {}},
        },
        {
            "seq": 4,
            "kind": "activity.retry_scheduled",
            "at": 101.0,
            "detail": {"step": "reserve", "attempt": 2, "at": 103.0},
        },
        {
            "seq": 5,
            "kind": "activity.scheduled",
            "at": 103.0,
            "detail": {"step": "reserve", "attempt": 2, "activity": "reserve_stock"},
        },
        {
            "seq": 6,
            "kind": "activity.completed",
            "at": 104.0,
            "detail": {"step": "reserve", "attempt": 2},
        },
        {
            "seq": 7,
            "kind": "signal.waiting",
            "at": 104.0,
            "detail": {"step": "ok", "signal": "approved"},
        },
        {"seq": 8, "kind": "steps.cancelled", "at": 110.0, "detail": {"steps": ["ok"]}},
        {
            "seq": 9,
            "kind": "activity.scheduled",
            "at": 110.0,
            "detail": {"step": "reserve~undo", "attempt": 1, "activity": "release_stock"},
        },
    ]
    timeline = build_timeline(records, 100.0, now=120.0)
    shown = {
        key: [(b.what, b.start, b.end, b.outcome) for b in bars]
        for key, bars in timeline.rows.items()
    }
    assert shown == {
        "reserve": [
            ("attempt", 100.0, 101.0, "failed"),
            ("retry wait", 101.0, 103.0, "waiting"),
            ("attempt", 103.0, 104.0, "completed"),
        ],
        "ok": [("signal wait", 104.0, 110.0, "cancelled")],
        # Still running when the records end: it runs to now.
        "reserve~undo": [("compensation", 110.0, 120.0, "running")],
    }
    svg = ET.fromstring(str(timeline_svg(timeline)))
    labels = [
        t.text
        for t in svg.iter("{http://www.w3.org/2000/svg}text")
        if t.get("class") == "row-label"
    ]
    assert labels == ["reserve", "ok", "reserve~undo"]


def test_diagrams_are_well_formed_svg_with_every_step_and_escape_what_they_show() -> None:
    definition = load_definition(ORDER.replace('"input.fast"', '"input.a < `3` && input.b"'))
    nodes = nodes_of(definition.to_data()["steps"])
    svg = str(diagram_svg(nodes, title="order <v1>"))
    root = ET.fromstring(svg)  # raises if an "<" or "&" got through unescaped
    text = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for step in (
        "reserve",
        "undo: release_stock",
        "deliver",
        "ship",
        "rush",
        "child express",
        "nap",
        "sleep 5 s",
        "ok",
        "signal approved",
    ):
        assert step in text, (step, text)
