"""The untrusted side of the grader.

Student code runs here, in a process of its own.  This package imports nothing from the
trusted side except :mod:`autograder.wire`, the codec both sides speak; verdicts are never
computed here.
"""
