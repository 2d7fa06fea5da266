"""An instance's timeline: its steps' attempts, waits and compensations, in one picture.

Built from the instance's history records (``docs/wire.md``, "History
records"): each step key gets a row, each attempt, retry wait, sleep,
signal wait, child run or group of inner steps a bar on it, from the record
that began it to the one that ended it. What is still open when the history
ends runs to ``now``. The picture is an SVG drawn here, on the server, with
the same bars as a table for readers who do not see it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from markupsafe import Markup, escape

__all__ = ["Bar", "Timeline", "build_timeline", "timeline_svg"]

#: Rows drawn at most; the rest are counted under the picture.
MAX_ROWS: Final = 60

#: Records that begin a bar: kind -> (what the bar is, whether an attempt number names it).
_BEGIN: Final[Mapping[str, str]] = {
    "activity.scheduled": "attempt",
    "sleep.started": "sleep",
    "signal.waiting": "signal wait",
    "child.started": "child",
    "parallel.started": "parallel",
    "map.started": "map",
    "choice.taken": "choice",
}
#: Records that end the open bar of their step, and how it ended.
_END: Final[Mapping[str, str]] = {
    "activity.completed": "completed",
    "activity.failed": "failed",
    "activity.settled": "settled",
    "sleep.completed": "completed",
    "signal.completed": "completed",
    "signal.timed_out": "failed",
    "child.completed": "completed",
    "child.failed": "failed",
    "parallel.completed": "completed",
    "map.completed": "completed",
    "choice.completed": "completed",
    "compensation.completed": "completed",
    "compensation.failed": "failed",
}


@dataclass
class Bar:
    """One span of time on a step's row."""

    key: str
    what: str
    start: float
    end: float | None = None
    #: ``running`` while open, then ``completed``, ``failed``, ``cancelled``, ``waiting``.
    outcome: str = "running"
    detail: str = ""

    @property
    def label(self) -> str:
        return f"{self.what} {self.detail}".strip()


@dataclass
class Timeline:
    """The bars of an instance by step key, in the order the steps first appeared."""

    start: float
    end: float
    rows: dict[str, list[Bar]] = field(default_factory=dict)
    #: Moments without length: signals received, the instance's end.
    marks: list[tuple[float, str]] = field(default_factory=list)

    @property
    def bars(self) -> list[Bar]:
        return [bar for bars in self.rows.values() for bar in bars]


def build_timeline(records: Sequence[Mapping[str, Any]], start: float, now: float) -> Timeline:
    """The timeline of an instance begun at ``start``, from its ``records``.

    Bars still open when the records end run to ``now``.
    """
    timeline = Timeline(start=start, end=start)
    open_bars: dict[str, Bar] = {}

    def close(key: str, at: float, outcome: str) -> None:
        bar = open_bars.pop(key, None)
        if bar is not None:
            bar.end = at
            bar.outcome = outcome

    for record in records:
        kind = str(record.get("kind", ""))
        at = _number(record.get("at"), timeline.end)
        detail = record.get("detail") or {}
        timeline.end = max(timeline.end, at)
        key = detail.get("step")
        if kind in _BEGIN and isinstance(key, str):
            close(key, at, "completed")
            what = _BEGIN[kind]
            if key.endswith("~undo"):
                what = "compensation"
            text = ""
            if kind == "activity.scheduled":
                text = f"#{detail.get('attempt', 1)} {detail.get('activity', '')}".strip()
            elif kind == "signal.waiting":
                text = str(detail.get("signal", ""))
            elif kind == "child.started":
                text = str(detail.get("child", ""))
            elif kind == "map.started":
                text = f"{detail.get('items', '?')} items"
            bar = Bar(key, what, at, detail=text)
            open_bars[key] = bar
            timeline.rows.setdefault(key, []).append(bar)
        elif kind in _END and isinstance(key, str):
            outcome = _END[kind]
            if outcome == "settled":
                outcome = str(detail.get("outcome", "completed"))
            close(key, at, outcome)
        elif kind == "activity.retry_scheduled" and isinstance(key, str):
            until = _number(detail.get("at"), at)
            timeline.rows.setdefault(key, []).append(
                Bar(key, "retry wait", at, until, "waiting", f"until #{detail.get('attempt')}")
            )
            timeline.end = max(timeline.end, until)
        elif kind == "steps.cancelled":
            for cancelled in detail.get("steps") or ():
                close(str(cancelled), at, "cancelled")
        elif kind == "signal.received":
            timeline.marks.append((at, f"signal {detail.get('signal', '')} received"))
        elif kind.startswith("workflow.") and kind != "workflow.started":
            timeline.marks.append((at, kind.removeprefix("workflow.")))
    if open_bars:
        timeline.end = max(timeline.end, now)
        for bar in open_bars.values():
            bar.end = timeline.end
    return timeline


def _number(value: Any, default: float) -> float:
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
    )


# -- drawing -------------------------------------------------------------------------

_WIDTH: Final = 960
_LABELS: Final = 200
_ROW: Final = 24
_AXIS: Final = 28


def timeline_svg(timeline: Timeline, max_rows: int = MAX_ROWS) -> Markup:
    """The timeline as an inline SVG element (styled by ``ui.css`` through its classes)."""
    keys = list(timeline.rows)[:max_rows]
    span = max(timeline.end - timeline.start, 1e-3)
    plot = _WIDTH - _LABELS - 10
    height = _AXIS + _ROW * max(len(keys), 1) + 10

    def x(at: float) -> float:
        return _LABELS + plot * (at - timeline.start) / span

    parts: list[str] = [
        f'<svg class="timeline" viewBox="0 0 {_WIDTH} {height}" role="img" '
        f'aria-labelledby="timeline-title" xmlns="http://www.w3.org/2000/svg">',
        '<title id="timeline-title">Timeline of the steps and their attempts</title>',
    ]
    for tick in range(5):
        at = timeline.start + span * tick / 4
        tx = x(at)
        anchor = "start" if tick == 0 else "end" if tick == 4 else "middle"
        parts.append(
            f'<line class="tick" x1="{tx:.1f}" y1="{_AXIS - 6}" x2="{tx:.1f}" y2="{height}"/>'
        )
        parts.append(
            f'<text class="axis" x="{tx:.1f}" y="{_AXIS - 10}" text-anchor="{anchor}">'
            f"+{_duration(at - timeline.start)}</text>"
        )
    for row, key in enumerate(keys):
        y = _AXIS + row * _ROW
        parts.append(f'<text class="row-label" x="4" y="{y + 16}">{escape(_clip(key, 26))}</text>')
        for bar in timeline.rows[key]:
            end = bar.end if bar.end is not None else timeline.end
            left = x(bar.start)
            width = max(x(end) - left, 2.0)
            kind = "comp" if bar.what == "compensation" else bar.what.replace(" ", "-")
            title = f"{key}: {bar.label}, {bar.outcome}, {_duration(end - bar.start)}"
            parts.append(
                f'<rect class="bar {kind} {escape(bar.outcome)}" x="{left:.1f}" y="{y + 4}" '
                f'width="{width:.1f}" height="{_ROW - 8}" rx="3">'
                f"<title>{escape(title)}</title></rect>"
            )
    for at, text in timeline.marks:
        mx = x(at)
        parts.append(
            f'<path class="mark" d="M{mx:.1f},{_AXIS - 4} l4,5 l-4,5 l-4,-5 z">'
            f"<title>{escape(text)} at +{_duration(at - timeline.start)}</title></path>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "\u2026"


def _duration(seconds: float) -> str:
    """``0.25`` as ``250 ms``, ``75`` as ``1 m 15 s``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} m {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} m"


def durations(bars: Iterable[Bar]) -> list[tuple[Bar, str]]:
    """Each bar with its length, readable."""
    return [(bar, _duration((bar.end or bar.start) - bar.start)) for bar in bars]
