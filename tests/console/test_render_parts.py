"""Server-side pieces of the pages: readmes (safe Markdown) and the inline SVG charts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from console import charts
from console.markdown import render
from console.user_pages import buckets_of, usage_series


def test_markdown_escapes_html_and_refuses_script_links() -> None:
    html = render(
        "<img src=x onerror=alert(1)>\n\n[a](javascript:alert(1)) [b](https://ok.example)\n\n|x|\n|-|\n|1|"
    )
    assert "<img" not in html and "&lt;img" in html
    assert 'href="javascript' not in html
    assert '<a href="https://ok.example">b</a>' in html
    assert "<table>" in html


def test_axis_maxima_are_round() -> None:
    assert [charts.nice_ceiling(v) for v in (0, 0.3, 7, 12, 180, 2400, 9001)] == [
        1.0,
        0.5,
        10.0,
        20.0,
        200.0,
        2500.0,
        10000.0,
    ]
    assert charts.compact(12_345) == "12.3k" and charts.compact(7) == "7" and charts.compact(2.5e6) == "2.5M"


def test_stacked_bars_total_and_escaping() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    buckets = [start + timedelta(hours=i) for i in range(3)]
    series = charts.series_from({"<b>evil</b>": [1, 0, 2], "m2": [5, 5, 5]})
    svg = charts.stacked_bars(buckets, series, label_format="%H:%M", unit="tokens", chart_id="c")
    assert 'data-total="18"' in svg
    assert "<b>evil</b>" not in svg and "&lt;b&gt;evil&lt;/b&gt;" in svg
    assert svg.count("<rect") == 5  # zero values draw nothing
    assert [s.name for s in series] == ["m2", "<b>evil</b>"]  # the largest first


def test_series_beyond_the_palette_are_summed_as_other() -> None:
    totals = {f"m{i}": [float(i)] for i in range(10)}
    series = charts.series_from(totals, "other", limit=3)
    assert [s.name for s in series] == ["m9", "m8", "m7", "other"]
    assert series[-1].values == [sum(range(7))]


def test_usage_lines_fill_every_bucket() -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    buckets = buckets_of(since, since + timedelta(hours=4), "hour")
    items = [
        {"bucket": "2026-01-01T01:00:00Z", "model": "a", "total_tokens": 10, "requests": 1},
        {"bucket": "2026-01-01T03:00:00Z", "model": "a", "total_tokens": 5, "requests": 2},
        {"bucket": "2026-01-01T03:00:00Z", "model": "b", "total_tokens": 7, "requests": 1},
    ]
    assert usage_series(items, buckets, "model", "total_tokens") == {"a": [0, 10, 0, 5], "b": [0, 0, 0, 7]}
    keyed = [{"bucket": "2026-01-01T00:00:00Z", "api_key": "k1", "api_key_name": None, "requests": 3}]
    assert usage_series(keyed, buckets, "api_key", "requests") == {"k1": [3, 0, 0, 0]}


def test_meter_marks_the_level() -> None:
    assert "meter-high" in charts.meter(31, 32) and "meter-low" in charts.meter(1, 32)
    assert "meter-peak" in charts.meter(10, 32, peak=20)
    assert "meter-unknown" in charts.meter(None, 32)
