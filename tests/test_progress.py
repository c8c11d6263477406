"""A learner's progress: the best score per problem set survives worse checks, visible-only
checks never count as a score, concurrent checks lose nothing, a damaged file loses nothing
else, and `autograder progress` lists every set of the course."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import nbformat

from autograder import progress
from autograder.catalogue import solution_answers, with_answers
from autograder.notebook import read_notebook

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_the_best_score_stays_and_visible_only_checks_are_not_scores(tmp_path):
    progress.record("ps05_derivatives", 14, 20, hidden_tests=True, folder=tmp_path)
    progress.record("ps05_derivatives", 18, 20, hidden_tests=True, folder=tmp_path)
    entry = progress.record("ps05_derivatives", 9, 20, hidden_tests=True, folder=tmp_path)
    assert (entry.best, entry.last, entry.checks) == (18, 9, 3)
    entry = progress.record("ps03_eigenvectors", 20, 20, hidden_tests=False, folder=tmp_path)
    assert entry.best is None and entry.visible_only_checks == 1
    rows = progress.overview(["ps01_vectors_matrices", "ps03_eigenvectors", "ps05_derivatives"], folder=tmp_path)
    assert [row.ps for row in rows] == ["ps01_vectors_matrices", "ps03_eigenvectors", "ps05_derivatives"]
    assert rows[0].checks == 0 and rows[2].best == 18


def test_a_damaged_file_starts_afresh(tmp_path):
    (tmp_path / progress.FILE).write_text("{ half written")
    assert progress.record("ps05_derivatives", 3, 20, hidden_tests=True, folder=tmp_path).best == 3
    # A row of the wrong types is dropped, the others are kept.
    (tmp_path / progress.FILE).write_text('{"problem_sets": {"ps05_derivatives": {"best": "x"}, '
                                          '"ps06_gradients_backprop": {"best": 5, "checks": 1, "nonsense": 1}}}')
    assert progress.record("ps05_derivatives", 4, 20, hidden_tests=True, folder=tmp_path).best == 4
    assert progress.load(tmp_path)["ps06_gradients_backprop"].best == 5


def _check_many(folder: str) -> None:
    for score in range(10):
        progress.record("ps05_derivatives", score, 20, hidden_tests=True, folder=Path(folder))


def test_concurrent_checks_lose_no_record(tmp_path):
    processes = [multiprocessing.get_context("fork").Process(target=_check_many, args=(str(tmp_path),))
                 for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    entry = progress.load(tmp_path)["ps05_derivatives"]
    assert entry.checks == 40 and entry.best == 9


def test_check_then_progress_in_a_terminal(tmp_path):
    source = read_notebook(ROOT / "source" / "ps05_derivatives" / "ps05_derivatives.ipynb")
    release = read_notebook(ROOT / "release" / "ps05_derivatives" / "ps05_derivatives.ipynb")
    notebook = tmp_path / "ps05_derivatives.ipynb"
    nbformat.write(with_answers(release, solution_answers(source)), notebook)
    env = {**os.environ, "AUTOGRADER_DATA_DIR": str(tmp_path / "data")}
    checked = subprocess.run([str(BIN / "autograder"), "check", str(notebook)], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    shown = subprocess.run([str(BIN / "autograder"), "progress"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    lines = {line.split()[0]: line for line in shown.stdout.splitlines() if line.startswith("ps")}
    assert "20/20" in lines["ps05_derivatives"]
    assert "not checked yet" in lines["ps01_vectors_matrices"]
    assert len([name for name in lines if name.startswith("ps")]) >= 12
