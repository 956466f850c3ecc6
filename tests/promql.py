"""Read the monitoring files (alert rules, Grafana dashboard) and the metric names their PromQL uses.

Used by the tests that check every expression against what the code exports (a live scrape).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

MONITORING = Path(__file__).resolve().parents[1] / "infra" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"

# PromQL words that look like metric names but are not
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                       "offset", "inf", "nan"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGES = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{[^}]*\})?\s*,\s*\w+\s*\)\s*$")


def metric_names(expr: str) -> set[str]:
    """The metric (sample) names a PromQL expression selects, e.g. ``mmads_stream_events_total``.

    Strings, label matchers, ``by (...)``-style label lists and range brackets are removed first; a
    word followed by ``(`` is a function or an aggregation, and a word after a digit is an exponent.
    Grafana's ``label_values(metric, label)`` gives its metric.
    """
    if (m := _LABEL_VALUES.match(expr)) is not None:
        return {m.group(1)}
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _LABEL_LISTS.sub("", text)
    text = _RANGES.sub("", text)
    names = set()
    for m in _IDENT.finditer(text):
        if text[m.end():].lstrip().startswith("(") or m.group().lower() in _KEYWORDS:
            continue
        names.add(m.group())
    return names


def alert_expressions(path: Path = ALERTS) -> dict[str, str]:
    """``alert name -> expr`` of every rule in a Prometheus rules file."""
    doc = yaml.safe_load(path.read_text())
    return {str(rule.get("alert") or rule.get("record")): str(rule["expr"])
            for group in doc["groups"] for rule in group["rules"]}


def dashboard_expressions(path: Path = DASHBOARD) -> dict[str, str]:
    """``"panel title / refId" -> expr`` of every target, plus the query of every templating variable."""
    doc = json.loads(path.read_text())
    out: dict[str, str] = {}

    def walk(panels: list[dict[str, object]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []) or []:  # type: ignore[union-attr]
                if isinstance(target, dict) and target.get("expr"):
                    out[f"{panel.get('title')} / {target.get('refId')}"] = str(target["expr"])
            walk(panel.get("panels", []) or [])  # type: ignore[arg-type]

    walk(doc.get("panels", []))
    for var in doc.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            out[f"variable {var.get('name')}"] = str(query.get("query") if isinstance(query, dict) else query)
    return out


def exported_names(exposition: str) -> set[str]:
    """The sample names of a Prometheus text exposition (``_total``, ``_bucket``, ``_sum``, ``_count`` ...)."""
    return {s.name for family in text_string_to_metric_families(exposition) for s in family.samples}


def unknown_names(expressions: dict[str, str], exported: set[str]) -> dict[str, set[str]]:
    """Per expression, the metric names it uses that are not in ``exported`` (empty when all are)."""
    out = {where: metric_names(expr) - exported for where, expr in expressions.items()}
    return {where: names for where, names in out.items() if names}
