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

# nbgrader's own `nbgrader autograde` (and so formgrader's Autograde button) grades with the same
# confined engine as `autograder grade`: nbgrader's autograde steps, with its Execute step (which
# runs the tests in the student's kernel) replaced by ours, and our feedback recorded as comments.
# The autograded notebook and `nbgrader generate_feedback`'s pages never hold hidden-test code.
c.Autograde.autograde_preprocessors = [
    "autograder.integrations.autograde.GradeWithEngine",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
    "autograder.integrations.autograde.RecordFeedbackComments",
]
