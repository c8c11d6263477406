"""An autograder for notebooks that keeps student code behind a process boundary."""

__version__ = "0.1.0"
