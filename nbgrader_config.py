# nbgrader configuration of the course, and the autograder engine's settings.
c = get_config()  # noqa: F821 - provided by traitlets when nbgrader loads this file

c.CourseDirectory.course_id = "math-for-ml"
# Mistakes catalogues, correct alternatives and the audit's records are for instructors and the
# test suite; they are not released.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "mistakes.toml",
                            "alternatives.toml", "audit.toml"]

# The autograder engine (all optional; these are the defaults).
c.Autograder.cell_timeout = 30          # seconds one cell or one test may run
c.Autograder.submission_timeout = 600   # seconds for a whole notebook
c.Autograder.strict = False             # True: refuse to grade where a protection is missing
