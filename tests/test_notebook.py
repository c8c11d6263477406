"""Reading submissions and restoring the instructor's cells."""

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from autograder.notebook import (
    CodeStep,
    NotebookError,
    TestStep,
    read_notebook,
    restore_instructor_cells,
    split_hidden_tests,
    strip_solution_markers,
)


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not valid JSON (line 1, column 2)"),
    ('{"hello": "world"}', "not a Jupyter notebook"),
    ('[1, 2]', "not a Jupyter notebook"),
    ('{"cells": [], "nbformat": 3}', "old notebook format"),
])
def test_unreadable_notebooks_get_one_clear_sentence(tmp_path, content, expected):
    path = tmp_path / "broken.ipynb"
    path.write_text(content)
    with pytest.raises(NotebookError) as error:
        read_notebook(path)
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_binary_and_missing_files(tmp_path):
    binary = tmp_path / "image.ipynb"
    binary.write_bytes(b"\x89PNG\x00\xff\xfe")
    with pytest.raises(NotebookError, match="not a text file"):
        read_notebook(binary)
    with pytest.raises(NotebookError, match="There is no file"):
        read_notebook(tmp_path / "missing.ipynb")


def test_hidden_tests_are_split_off_with_their_line_numbers():
    source = "a = 1\n### BEGIN HIDDEN TESTS\nb = 2\nc = 3\n### END HIDDEN TESTS\nd = 4"
    text, hidden = split_hidden_tests(source)
    assert text == "a = 1\nb = 2\nc = 3\nd = 4"
    assert hidden == {2, 3}
    assert strip_solution_markers("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION") \
        == "def f():\n    return 1"


def _tests(steps):
    return [step for step in steps if isinstance(step, TestStep)]


def test_edited_and_deleted_test_cells_are_restored_from_the_source(tiny):
    def vandalise(notebook):
        for cell in notebook.cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if gid == "test_double":
                cell.source = "pass"
                cell.metadata["nbgrader"]["points"] = 100
        notebook.cells = [cell for cell in notebook.cells
                          if cell.metadata.get("nbgrader", {}).get("grade_id") != "test_apply_twice"]

    steps = restore_instructor_cells(tiny.source, read_notebook(tiny.submission("v", edit=vandalise)))
    tests = _tests(steps)
    assert [test.grade_id for test in tests] == ["test_double", "test_apply_twice"]
    assert "check_close(double(x)" in tests[0].source and tests[0].points == 2
    assert tests[1].points == 1


def test_added_cells_run_after_the_cell_they_follow(tiny):
    def add(notebook):
        index = next(i for i, cell in enumerate(notebook.cells)
                     if cell.metadata.get("nbgrader", {}).get("grade_id") == "double")
        notebook.cells.insert(index + 1, new_code_cell("helper = 1"))
        notebook.cells.insert(0, new_code_cell("first = 1"))

    steps = restore_instructor_cells(tiny.source, read_notebook(tiny.submission("a", edit=add)))
    labels = [step.label for step in steps if isinstance(step, CodeStep)]
    assert labels[0].startswith("added before")
    assert labels[labels.index("double") + 1].startswith("added after double")


def test_read_only_cells_come_from_the_source(tiny):
    def tamper(notebook):
        for cell in notebook.cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == "setup":
                cell.source = "import numpy as np\nnp.allclose = lambda *a, **k: True"

    steps = restore_instructor_cells(tiny.source, read_notebook(tiny.submission("t", edit=tamper)))
    setup = next(step for step in steps if isinstance(step, CodeStep) and step.label == "setup")
    assert "allclose" not in setup.source and setup.origin == "instructor"


def test_a_notebook_of_another_problem_set_is_refused(tiny, tmp_path):
    other = nbformat.v4.new_notebook()
    other.cells = [new_code_cell("x = 1", metadata={"nbgrader": {"grade_id": "elsewhere", "solution": True}})]
    path = tmp_path / "other.ipynb"
    path.write_text(json.dumps(other))
    with pytest.raises(NotebookError, match="none of the answer cells of tiny"):
        restore_instructor_cells(tiny.source, read_notebook(path))


def test_display_only_cells_are_not_graded(tiny):
    from nbformat.v4 import new_code_cell as cell

    tiny.notebook.cells.insert(2, cell("while True:\n    pass", metadata={
        "tags": ["display-only"],
        "nbgrader": {"grade": False, "grade_id": "picture", "locked": True, "solution": False,
                     "schema_version": 3, "task": False}}))
    nbformat.write(tiny.notebook, tiny.path)
    from autograder.notebook import SourceNotebook

    source = SourceNotebook.load(tiny.path)
    steps = restore_instructor_cells(source, read_notebook(tiny.submission("s")))
    assert "picture" not in [step.label for step in steps if isinstance(step, CodeStep)]
