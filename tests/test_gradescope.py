"""Gradescope's results.json, validated against the schema of its autograder specification."""

from __future__ import annotations

import json

import jsonschema
import pytest

from autograder.gradescope import gradescope_results
from autograder.grading import grade_notebook

# The fields and types Gradescope documents for results.json (autograder specifications).
TEST_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "number"},
        "max_score": {"type": "number"},
        "status": {"enum": ["passed", "failed"]},
        "name": {"type": "string"},
        "name_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
        "number": {"type": "string"},
        "output": {"type": "string"},
        "output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "visibility": {"enum": ["hidden", "after_due_date", "after_published", "visible"]},
        "extra_data": {"type": "object"},
    },
    "additionalProperties": False,
}
RESULTS_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "number"},
        "execution_time": {"type": "number"},
        "output": {"type": "string"},
        "output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
        "test_output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
        "test_name_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
        "visibility": {"enum": ["hidden", "after_due_date", "after_published", "visible"]},
        "stdout_visibility": {"enum": ["hidden", "after_due_date", "after_published", "visible"]},
        "extra_data": {"type": "object"},
        "tests": {"type": "array", "items": TEST_SCHEMA},
        "leaderboard": {"type": "array"},
    },
    "anyOf": [{"required": ["score"]}, {"required": ["tests"]}],
    "additionalProperties": False,
}


@pytest.mark.parametrize("answers, full", [(None, True), ({"double": "def double(x):\n    return -2 * x"}, False)])
def test_results_json_validates_and_carries_the_verdicts(tiny, answers, full):
    report = grade_notebook(tiny.source, tiny.submission("s", answers), limits=tiny.limits)
    results = gradescope_results(report)
    jsonschema.validate(results, RESULTS_SCHEMA)
    assert results["score"] == report.score
    assert sum(test["max_score"] for test in results["tests"]) == report.max_score == 3
    assert [test["status"] for test in results["tests"]] == (["passed", "passed"] if full else ["failed", "passed"])
    if not full:
        assert "sign error" in results["tests"][0]["output"]
        assert results["tests"][0]["extra_data"]["diagnosis"] == "a sign error"


def test_an_ungradable_notebook_still_gives_valid_results(tiny, tmp_path):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{]")
    results = gradescope_results(grade_notebook(tiny.source, broken, limits=tiny.limits))
    jsonschema.validate(results, RESULTS_SCHEMA)
    assert results["score"] == 0 and "not valid JSON" in results["output"]
    assert json.loads(json.dumps(results)) == results
