"""Prediction monitoring on the command line: `berth monitor baseline`, and the block `berth get API` shows
(the predictions per class or the value histogram, and the drift line)."""

from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime
from typing import Any

import click
from rich.markup import escape
from rich.text import Text

from berth.cli.context import CLIContext, env_option, pass_context
from berth.errors import BerthError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
TOP_CLASSES = 10
BAR = 24  # characters of the longest bar
LABEL_WIDTH = 30  # longer class labels are cut, so the counts stay in columns
MIN_SAMPLES = 100  # berth.core.drift's, for a daemon that does not say


# --- time on the command line --------------------------------------------------------------------
def point_in_time(text: str, now: float) -> float:
    """`30m`, `2h`, `1d` (that long ago), `now`, or a local date and time (`2026-12-02 10:00`,
    `2026-12-02T10:00:00`): a unix time."""
    if text.strip() == "now":
        return now
    match = DURATION.match(text)
    if match:
        return now - float(match.group(1)) * UNITS[match.group(2)]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise BerthError(f"expected a duration like 30m, 2h or 1d, or a date and time like 2026-12-02 10:00; "
                         f"got {text!r}", hint="e.g. --since 2h --until 1h") from None


def window_seconds(text: str, now: float) -> float:
    """`--since`: the seconds between that point and now."""
    since = point_in_time(text, now)
    if since > now:
        raise BerthError(f"--since {text} is in the future", hint="pass a duration like 1h or a past date")
    return now - since


def clock_time(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


def span(start: float, end: float) -> str:
    """`2026-12-02 10:00-11:00` (with an en dash), or both dates when the window crosses midnight."""
    first, last = time.localtime(start), time.localtime(end)
    same_day = first[:3] == last[:3]
    return f"{clock_time(start)}\u2013{time.strftime('%H:%M' if same_day else '%Y-%m-%d %H:%M', last)}"


# --- the block in `berth get API` ---------------------------------------------------------------
def prediction_block(api: dict[str, Any], window: str | None) -> list[Text]:
    """Nothing when the API has no `monitoring`; else the predictions and the drift line."""
    config = api.get("monitoring")
    if not config:
        return []
    over = f"the last {window}" if window else "all history (up to 14 days)"
    summary = api.get("predictions")
    key = f", key {config['key']}" if config.get("key") else ""
    title = f"predictions ({config.get('model_type')}{key}), {over}"
    if not summary or not summary.get("count"):
        return [Text(""), Text.from_markup(f"[bold]{escape(title)}:[/bold] none recorded yet"), drift_line(api)]
    lines = [Text(""), Text.from_markup(f"[bold]{escape(title)}:[/bold] {summary['count']:,}")]
    if summary["model_type"] == "classification":
        lines += class_lines(summary["classes"], summary["count"])
    else:
        lines += value_lines(summary)
    if summary.get("wrong_type"):
        wrong = int(summary["wrong_type"])
        were = "response was" if wrong == 1 else "responses were"
        lines.append(Text(f"  {wrong:,} {were} not a {config.get('model_type')} prediction (see `berth logs`)",
                          style="yellow"))
    lines.append(drift_line(api))
    return lines


def class_lines(classes: dict[str, int], total: int) -> list[Text]:
    ranked = sorted(classes.items(), key=lambda item: (-item[1], item[0]))
    shown = [(_label(label), count) for label, count in ranked[:TOP_CLASSES]]
    width = max(len(label) for label, _ in shown)
    most = shown[0][1] or 1
    lines = [Text(f"  {label:<{width}}  {count:>9,}  {100 * count / total:5.1f}%  {_bar(count, most)}")
             for label, count in shown]
    rest = ranked[TOP_CLASSES:]
    if rest:
        others = sum(count for _, count in rest)
        lines.append(Text(f"  … {len(rest)} more classes: {others:,} ({100 * others / total:.1f}%)", style="dim"))
    return lines


def value_lines(summary: dict[str, Any]) -> list[Text]:
    lines = [Text(f"  min {_number(summary['min'])}   max {_number(summary['max'])}   "
                  f"avg {_number(summary['avg'])}")]
    histogram = summary.get("histogram")
    if not histogram:
        return lines
    bounds, counts = histogram["bounds"], histogram["counts"]
    filled = [i for i, count in enumerate(counts) if count]
    most = max(counts) or 1
    edges = [-math.inf, *bounds, math.inf]
    labels = [f"({_number(edges[i])}, {_number(edges[i + 1])}]" for i in range(filled[0], filled[-1] + 1)]
    width = max(len(label) for label in labels)
    for label, i in zip(labels, range(filled[0], filled[-1] + 1), strict=True):
        lines.append(Text(f"  {label:>{width}}  {counts[i]:>9,}  {_bar(counts[i], most)}"))
    return lines


def drift_line(api: dict[str, Any]) -> Text:
    drift = api.get("drift")
    if not drift:
        return Text.from_markup("[bold]drift:[/bold] no reference window yet (deploy, then predictions)")
    reference = drift.get("reference") or {}
    pinned = reference.get("source") == "pinned"
    start, end = drift["baseline"]
    window = span(start, end) if pinned else f"the first day after the deploy at {clock_time(start)}"
    if drift.get("psi") is None:
        samples = drift.get("samples") or {}
        yet = "" if pinned else " yet"
        return Text.from_markup(
            f"[bold]drift:[/bold] not enough data{yet} — {samples.get('window', 0):,} predictions in the last "
            f"hour, {samples.get('baseline', 0):,} in the baseline ({escape(window)}); needs "
            f"{samples.get('required', MIN_SAMPLES):,} in each")
    baseline = f"{window} (baseline)" if pinned else f"baseline: {window}"
    style = {"stable": "green", "shifting": "yellow", "drifted": "red"}.get(drift["verdict"], "")
    return Text.from_markup(f"[bold]drift:[/bold] {drift['psi']:.2f} ([{style}]{drift['verdict']}[/{style}]) — "
                            f"last hour vs {escape(baseline)}")


def _label(label: str, width: int = LABEL_WIDTH) -> str:
    return label if len(label) <= width else label[:width - 1] + "\u2026"


def _bar(count: int, most: int) -> str:
    return "█" * max(1, round(BAR * count / most)) if count else ""


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "-inf" if value < 0 else "+inf"
    return f"{value:.4g}"


# --- berth monitor ------------------------------------------------------------------------------------
@click.group()
def monitor() -> None:
    """Prediction monitoring: the reference window drift is measured against."""


@monitor.command()
@click.argument("api")
@click.option("--since", "since", default=None, metavar="WHEN",
              help="Start of the reference window: 2h (ago), or a date and time (default: an hour before --until).")
@click.option("--until", "until", default=None, metavar="WHEN", help="End of the reference window (default: now).")
@click.option("--reset", is_flag=True, help="Unpin: back to the first day after the latest deploy.")
@click.option("-o", "--output", type=click.Choice(["pretty", "json"]), default="pretty")
@env_option
@pass_context
def baseline(obj: CLIContext, api: str, since: str | None, until: str | None, reset: bool, output: str) -> None:
    """Pin API's drift reference to a window of past predictions (default: the last hour)."""
    now = time.time()
    with obj.naming_known(api):
        if reset:
            if since or until:
                raise BerthError("--reset goes without --since and --until", hint="pass either, not both")
            result = obj.backend().unpin_baseline(api)
        else:
            end = point_in_time(until, now) if until else None
            start = point_in_time(since, now) if since else None
            if start is not None and start >= (end if end is not None else now):
                raise BerthError(f"the window must start before it ends: --since {since} is not before "
                                 f"{'--until ' + until if until else 'now'}", hint="e.g. --since 2h --until 1h")
            result = obj.backend().pin_baseline(api, start, end)
    if output == "json":
        click.echo(json.dumps(result, indent=2))
        return
    obj.console.print(_baseline_text(api, result.get("reference")))
    obj.console.print(drift_line(result), soft_wrap=True)


def _baseline_text(api: str, reference: dict[str, Any] | None) -> Text:
    if reference is None:
        return Text(f"{api}: no reference window (it has no deploy on record)")
    if reference["source"] == "pinned":
        return Text(f"{api}: drift is measured against {span(reference['from'], reference['to'])} (pinned)")
    return Text(f"{api}: drift is measured against the first day after the deploy at "
                f"{clock_time(reference['from'])}")
