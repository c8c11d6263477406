"""The trusted side of the boundary.

* :mod:`~autograder.grader.launcher` starts the warm worker template and asks it for confined
  workers, each with a scratch space of its own;
* :mod:`~autograder.grader.session` runs one submission's cells in its worker, calls student
  functions through proxies, and replaces a worker that dies or hangs;
* :mod:`~autograder.grader.grading` runs the test cells here, in the grader's own process, and
  makes the report.

Nothing here runs student code; everything the worker sends is checked and bounded.
"""
