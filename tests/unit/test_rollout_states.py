"""The rollout's pure parts (distilqa.serving.rollout): merge patches, readiness, error rates, settings.
The rollout itself runs against the API stand-in in tests/integration/test_rollout.py."""

from __future__ import annotations

import pytest
from distilqa.serving.rollout import Release, canary_state, error_rate, first_state, merge_diff, readiness

from distilqa.errors import ConfigError
from tests.k8s_standin import merge_patch

ONE = Release("img:1", "s3://b/1", "tinyroberta-squad2", "1", "fp32")
TWO = Release("img:2", "s3://b/2", "tinyroberta-squad2", "2", "int8")


def test_merge_diff_turns_any_state_into_any_other_under_rfc7386():
    first = first_state(ONE, "distilqa", "tinyroberta-squad2", "distilqa-serving")["spec"]
    canary = canary_state(first, TWO, 10)
    edited = {**first, "predictor": {**first["predictor"], "minReplicas": 2, "scaleTarget": None}}
    edited["predictor"].pop("scaleTarget")
    for a, b in [(first, canary), (canary, first), (first, edited), (edited, canary), (canary, canary)]:
        assert merge_patch(a, merge_diff(a, b)) == b  # the stand-in's RFC 7386, written independently
    assert merge_diff(canary, first) == {"canary": None}
    assert merge_diff(first, first) == {}


def test_ready_counts_only_at_the_applied_generation():
    ready_old = {
        "observedGeneration": 3,
        "conditions": [{"type": "Ready", "status": "True"}],
        "components": {"predictor": {"url": "http://stable"}},
    }
    assert readiness(ready_old, 4, "predictor")[0] == "waiting"  # the Ready of the previous generation
    assert readiness(ready_old, 3, "predictor") == ("ready", "http://stable")
    canary = {**ready_old, "observedGeneration": 4, "canaryStatuses": [{"name": "challenger", "ready": False}]}
    assert readiness(canary, 4, "challenger") == ("waiting", "challenger is not ready")
    canary["canaryStatuses"][0] = {"name": "challenger", "ready": True, "trafficPercent": 10}
    assert readiness(canary, 4, "challenger")[0] == "waiting"  # ready, but no component URL yet
    canary["components"]["challenger"] = {"url": "http://canary"}
    assert readiness(canary, 4, "challenger") == ("ready", "http://canary")
    canary["canaryStatuses"][0]["modelStatus"] = {
        "transitionStatus": "BlockedByFailedLoad",
        "lastFailureInfo": {"message": "no config.json"},
    }
    state, why = readiness(canary, 4, "challenger")
    assert state == "failed" and "no config.json" in why


def test_error_rate_between_two_readings():
    assert error_rate({"ok": 10, "error": 0}, {"ok": 30, "error": 5}) == (0.2, 25)
    assert error_rate({"ok": 10, "error": 1, "invalid": 3}, {"ok": 10, "error": 1, "invalid": 9}) == (0.0, 0)
    # a reading from another replica can go backwards: its own counts are used
    assert error_rate({"ok": 100, "error": 0}, {"ok": 9, "error": 1}) == (0.1, 10)


@pytest.mark.parametrize("steps", [[], [10], [50, 10, 100], [10, 10, 100], [0, 100], [10, 150], "ten"])
def test_canary_steps_must_rise_to_100(steps):
    from distilqa.pipelines.profile import build_section

    with pytest.raises(ConfigError, match="canary_steps"):
        build_section("deploy", {"canary_steps": steps})


def test_canary_steps_from_yaml_json_and_set_text():
    from distilqa.pipelines.profile import build_section, load_profile

    assert build_section("deploy", {"canary_steps": [10, 50, 100]}).canary_steps == (10, 50, 100)
    assert build_section("deploy", {"canary_steps": [10.0, 100.0]}).canary_steps == (10, 100)  # JSON via KFP
    assert build_section("deploy", {"canary_steps": 100}).canary_steps == (100,)
    profile = load_profile("production", ["deploy.canary_steps=10,50,100"])
    assert profile.deploy.canary_steps == (10, 50, 100)
