"""The soak's memory verdict: a heap that levels off is told apart from one that keeps growing."""

from __future__ import annotations

import pytest

from distilqa.bench.serve_speed import format_report, rss_summary


def test_levelling_off_shows_little_second_half_growth():
    warm_up = [900.0, 940.0, 960.0, 970.0, 975.0, 978.0, 979.0, 980.0, 980.0]
    s = rss_summary(warm_up)
    assert s["rss_growth_pct"] == pytest.approx(8.89, abs=0.01)
    assert s["rss_growth_second_half_pct"] == pytest.approx(100 * (980 - 975) / 975, abs=0.01)
    assert s["rss_peak_mb"] == 980.0 and s["rss_samples_mb"] == warm_up


def test_a_leak_grows_in_the_second_half_too():
    leak = [900.0 + 10 * i for i in range(9)]
    s = rss_summary(leak)
    assert s["rss_growth_second_half_pct"] == pytest.approx(100 * 40 / 940, abs=0.01)
    assert s["rss_growth_second_half_pct"] > 4 * rss_summary([900.0, 940, 960, 970, 975, 978, 979, 980, 980])[
        "rss_growth_second_half_pct"
    ]


def test_one_reading_is_not_a_soak():
    with pytest.raises(ValueError, match="at least 2"):
        rss_summary([900.0])


def test_report_shows_both_growth_figures():
    run = {"precision": "int8", "questions_per_s": 10.0, "p50_ms": 1, "p95_ms": 2, "p99_ms": 3, "errors": 0}
    run |= {"same_answers_as_fp32_predict": 0.9, "same_answers_as_int8_predict": 1.0}
    soak = {"seconds": 120, "requests": 1000, "errors": 0, "p99_ms": 4} | rss_summary([1000.0, 1050.0, 1060.0])
    text = format_report({"model": "m", "questions": 4, "concurrency": 16, "distilqa": run, "soak": soak})
    assert "RSS 1000.0 -> 1060.0 MB (+6.00%; second half +0.95%, peak 1060.0 MB)" in text
