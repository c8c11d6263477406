"""The engine's settings: c.Autograder in nbgrader_config.py, read strictly and documented from one place."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autograder.settings import Limits, SettingsError, load_limits, settings_table

ROOT = Path(__file__).resolve().parent.parent



def test_the_documented_table_is_made_from_the_settings_help():
    assert settings_table() in (ROOT / "README.md").read_text()


def test_defaults_need_no_configuration():
    from traitlets.config import Config

    assert load_limits(Config()) == Limits()


@pytest.mark.parametrize("line, sentence", [
    ("c.Autograder.cell_timout = 5", "sets c.Autograder.cell_timout, which is not a setting of the autograder. "
                                     "Did you mean c.Autograder.cell_timeout?"),
    ("c.Autograder.cell_timeout = 'five'", "sets c.Autograder.cell_timeout to 'five', which is not a float"),
    ("c.Autograder.strict = 'yes please'", "sets c.Autograder.strict to 'yes please', which is not a bool"),
    ("c.Autograder.cell_timeout = -1", "a time limit that is not positive"),
])
def test_a_misspelt_or_mistyped_setting_is_one_sentence_and_exit_2(tmp_path, tiny, line, sentence):
    course = tmp_path / "course"
    (course / "source" / "tiny").mkdir(parents=True)
    shutil.copy(tiny.path, course / "source" / "tiny" / "tiny.ipynb")
    (course / "nbgrader_config.py").write_text((ROOT / "nbgrader_config.py").read_text() + line + "\n")
    result = subprocess.run([str(Path(sys.executable).parent / "autograder"), "--course", str(course), "check",
                             str(tiny.submission("solution")), "--ps", "tiny"], capture_output=True, text=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert sentence in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_settings_reach_the_worker(tiny):
    """memory_mib and max_processes are the worker's limits, not decoration."""
    import dataclasses

    from autograder.grader.grading import grade_notebook

    limits = dataclasses.replace(tiny.limits, memory_bytes=600 * 1024**2)
    # np.zeros maps zero pages lazily: quick when allowed, a MemoryError at once when not.
    hog = "import numpy as np\ndef double(x):\n    block = np.zeros(50 * 1024**2)\n    return 2 * x\n"
    report = grade_notebook(tiny.source, tiny.submission("hog", {"double": hog}), limits=limits, launcher=tiny.launcher)
    assert report.tests[0].points == 0 and "MemoryError" in report.tests[0].message
    report = grade_notebook(tiny.source, tiny.submission("hog", {"double": hog}), limits=tiny.limits,
                            launcher=tiny.launcher)
    assert report.tests[0].points == 2


def test_settings_errors_are_autograder_errors():
    from autograder.errors import AutograderError

    assert issubclass(SettingsError, AutograderError)
