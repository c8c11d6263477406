"""Visible tests in a student's own kernel: a passing test cell says so in one line (without
claiming the hidden tests passed), a failed check shows its sentence without a traceback
through our modules, and the cell still counts as failed (for Run All and plain nbgrader)."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from autograder.checks import PASSED_LINE


def test_a_kernel_shows_one_line_for_a_pass_and_the_sentence_for_a_failure():
    notebook = new_notebook(cells=[
        new_code_cell("import numpy as np\nfrom autograder.checks import check_close"),
        new_code_cell("def double(x):\n    return 2 * x"),
        new_code_cell("check_close(double(2.0), 4.0, what='double(2.0)')"),  # a visible test that passes
        new_code_cell("check_close(double(3.0), 7.0, what='double(3.0)')"),  # one that fails
        new_code_cell("print('not a test cell')"),
        # a test cell with a helper of its own and a plain assert, as some problem sets write them
        new_code_cell("def _check_double(value):\n    assert value == 4.0, 'double(2.0) should be 4'\n\n"
                      "_check_double(double(2.0))"),
    ])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(notebook, timeout=120, allow_errors=True).execute()
    outputs = [cell.outputs for cell in notebook.cells]
    passed = "".join(output.get("text", "") for output in outputs[2])
    assert passed.strip() == PASSED_LINE
    [error] = [output for output in outputs[3] if output.output_type == "error"]  # still an error
    shown = "\n".join(error.traceback)
    assert "double(3.0)" in shown and "7" in shown
    assert "checks.py" not in shown and "Traceback" not in shown and "File " not in shown
    assert PASSED_LINE not in "".join(output.get("text", "") for output in outputs[3])
    assert "".join(output.get("text", "") for output in outputs[4]).strip() == "not a test cell"
    assert "".join(output.get("text", "") for output in outputs[5]).strip() == PASSED_LINE
    nbformat.validate(notebook)
