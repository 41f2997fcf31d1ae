"""The soak's memory verdict: a heap that swings or levels off is told apart from one that keeps growing."""

from __future__ import annotations

import pytest

from distilqa.bench.serve_speed import format_report, rss_summary

# readings of a real soak (int8 server, AVX2 EPYC, 2026-12-02): it swings by 3% and stops rising
SWINGING = [925.6, 937.9, 939.3, 946.9, 947.0, 961.9, 933.2, 944.4, 936.1, 946.6, 961.5, 961.6, 961.6, 961.6]


def test_a_swinging_heap_has_no_peak_growth():
    s = rss_summary(SWINGING)
    assert s["rss_growth_pct"] == pytest.approx(3.89, abs=0.01)
    assert s["rss_peak_growth_second_half_pct"] == pytest.approx(100 * (961.6 - 961.9) / 961.9, abs=0.01)
    assert s["rss_peak_mb"] == 961.9 and s["rss_samples_mb"] == SWINGING


def test_a_leak_raises_the_second_half_peak():
    leak = [900.0 + 10 * i for i in range(10)]
    s = rss_summary(leak)
    assert s["rss_peak_growth_second_half_pct"] == pytest.approx(100 * (990 - 940) / 940, abs=0.01)
    assert s["rss_peak_growth_second_half_pct"] > 5


def test_one_reading_is_not_a_soak():
    with pytest.raises(ValueError, match="at least 2"):
        rss_summary([900.0])


def test_report_shows_both_growth_figures():
    run = {"precision": "int8", "questions_per_s": 10.0, "p50_ms": 1, "p95_ms": 2, "p99_ms": 3, "errors": 0}
    run |= {"same_answers_as_fp32_predict": 0.9, "same_answers_as_int8_predict": 1.0}
    soak = {"seconds": 120, "requests": 1000, "errors": 0, "p99_ms": 4} | rss_summary([1000.0, 1050.0, 1060.0, 1040.0])
    text = format_report({"model": "m", "questions": 4, "concurrency": 16, "distilqa": run, "soak": soak})
    assert "RSS 1000.0 -> 1040.0 MB (+4.00%; peak 1060.0 MB, second half's peak over the first's +0.95%)" in text
