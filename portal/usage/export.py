"""A usage report as CSV: one line per group, the columns a spreadsheet needs, no totals line (a
totals line would be counted twice by a pivot table or a SUM over the column)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from decimal import Decimal

from portal.usage.report import DIMENSION_ORDER, Report, UsageQuery

MEASURE_COLUMNS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "estimated_requests",
    "cost",
    "avg_latency_ms",
    "avg_ttft_ms",
    "units",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    """Text as a spreadsheet will show it: a value that would start a formula is quoted with `'`
    (OWASP CSV injection), numbers are written plainly (Decimal in fixed point)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return f"'{value}" if value.startswith(_FORMULA_START) else value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def header(q: UsageQuery) -> list[str]:
    columns: list[str] = []
    for dimension in DIMENSION_ORDER:
        if not q.grouped(dimension):
            continue
        if dimension == "period":
            columns += ["period", "bucket_start"]
        elif dimension == "api_key":
            columns += ["api_key", "api_key_name"]
        else:
            columns.append(dimension)
    return columns + list(MEASURE_COLUMNS)


def to_csv(q: UsageQuery, report: Report, key_names: Mapping[str, str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(header(q))
    for line in report.lines:
        row: list[object] = []
        for dimension in DIMENSION_ORDER:
            if not q.grouped(dimension):
                continue
            if dimension == "period":
                assert line.bucket is not None
                row += [q.period, line.bucket.isoformat().replace("+00:00", "Z")]
            elif dimension == "api_key":
                row += [line.api_key, key_names.get(line.api_key or "")]
            else:
                row.append(getattr(line, dimension))
        s = line.sums
        row += [
            s.requests,
            s.errors,
            s.prompt_tokens,
            s.completion_tokens,
            s.cached_tokens,
            s.reasoning_tokens,
            s.total_tokens,
            s.estimated_requests,
            s.cost,
            s.avg_latency_ms,
            s.avg_ttft_ms,
            s.units,
        ]
        writer.writerow([_cell(v) for v in row])
    return out.getvalue()
