"""An autograder for notebooks that keeps student code behind a process boundary."""

__version__ = "0.1.0"
# The name on the package index (`pip install mathgrader`); the module is `autograder`.
DISTRIBUTION = "mathgrader"
