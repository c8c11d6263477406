"""`autograder export otter PS`: the master notebook, through the real otter-grader.

For every problem set the CLI writes the master notebook, `otter assign` turns it into a student
notebook and an autograder zip (running its own tests against the solutions), and `otter run`
grades three submissions made from otter's student notebook: the instructor's answers (full
marks), the notebook untouched (nothing), and a catalogued mistake (loses its exercise).

Each otter command starts a kernel, so the pipelines of all problem sets run at once in one module
fixture; the tests then read what they produced.  A problem set's otter commands run one after
another in one Python process of their own (otter's own command line, `otter.cli`, given each
command's arguments): importing otter costs more than a second, once per set rather than once
per command.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder.catalogue import load_catalogue, mistake_notebook, solution_answers, with_answers
from autograder.course import Course
from autograder.integrations.otter import OtterExportError, otter_master_notebook
from autograder.notebook import (
    BEGIN_SOLUTION,
    END_SOLUTION,
    Node,
    grade_id,
    nbgrader_metadata,
    read_notebook,
    split_hidden_tests,
)

ROOT = Path(__file__).resolve().parent.parent


COURSE = Course(ROOT)
PROBLEM_SETS = COURSE.problem_sets()
BIN = Path(sys.executable).parent
OTTER = BIN / "otter"
AUTOGRADER = BIN / "autograder"
FULL_MARKS = 20
# That otter gives an untouched notebook nothing is a property of the export, not of a set's
# tests (every set's release scoring zero is tested with our engine): two sets show it.
UNTOUCHED_SETS = sorted({PROBLEM_SETS[0], PROBLEM_SETS[-1]})


# --------------------------------------------------------------------------- the pipelines


@dataclass
class Pipeline:
    course: Course
    ps: str
    folder: Path
    master: Path | None = None
    assign_log: str = ""
    autograder_zip: Path | None = None
    student: Path | None = None
    autograder_notebook: Path | None = None
    mistake: object = None
    results: dict[str, dict] = field(default_factory=dict)  # submission -> results.json
    error: str | None = None


# Otter commands running at once: a few more than cores, as each waits for its kernel a while.
SLOTS = threading.BoundedSemaphore(3 * (os.cpu_count() or 2))

# Runs otter commands sent on stdin, one JSON line each ([folder, [argument, ...], log file]), one
# after another (otter changes the working directory), each as `otter ARGUMENT...` would run it;
# answers each with its exit code on a line.  What a command prints goes to its log file.
_OTTER_COMMANDS = """
import json, os, sys, traceback
from otter.cli import cli
answers = os.fdopen(os.dup(1), "w")
for line in sys.stdin:
    folder, arguments, log = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "wb") as output:
        os.dup2(output.fileno(), 1); os.dup2(output.fileno(), 2)
    try:
        os.chdir(folder)
        cli.main(arguments, prog_name="otter", standalone_mode=False)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush(); sys.stderr.flush()
    os.dup2(saved[0], 1); os.dup2(saved[1], 2)
    os.close(saved[0]); os.close(saved[1])
    answers.write(json.dumps(code) + "\\n"); answers.flush()
"""


class Otter:
    """One Python process that runs a problem set's otter commands."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.tmp = folder / "tmp"
        self.tmp.mkdir(exist_ok=True)
        env = {**os.environ, "TMPDIR": str(self.tmp), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        self._log = self.tmp / "otter-process.log"  # what the process prints outside a command
        with self._log.open("w") as log:
            self._process = subprocess.Popen([sys.executable, "-c", _OTTER_COMMANDS], cwd=folder, env=env, text=True,
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        self._count = 0

    def __call__(self, *arguments: object, cwd: Path) -> str:
        """``otter ARGUMENTS...`` in ``cwd``: what it printed, or AssertionError when it failed."""
        command = " ".join(map(str, ["otter", *arguments]))
        for _ in range(3):
            self._count += 1
            log = self.tmp / f"command-{self._count}.log"
            with SLOTS:
                assert self._process.stdin is not None and self._process.stdout is not None
                self._process.stdin.write(json.dumps([str(cwd), [str(part) for part in arguments], str(log)]) + "\n")
                self._process.stdin.flush()
                answer = self._process.stdout.readline()
            output = log.read_text(errors="replace") if log.exists() else ""
            if not answer:
                raise AssertionError(f"{command}: the otter process ended "
                                     f"({self._log.read_text(errors='replace')[-3000:]})")
            code = json.loads(answer)
            # jupyter_client picks a kernel's ports, frees them and lets the kernel bind them; a kernel
            # another command starts meanwhile can take one (jupyter/jupyter_client#487). Otter does
            # not retry, so the command runs again.
            if code == 0 or "ZMQError: Address already in use" not in output:
                break
        if code != 0:
            raise AssertionError(f"{command} failed ({code}):\n{output[-6000:]}")
        return output

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()


def _run(command: list, cwd: Path, folder: Path) -> str:
    tmp = folder / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=900)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, command))} failed ({result.returncode}):\n"
                             f"{(result.stdout + result.stderr)[-6000:]}")
    return result.stdout + result.stderr


def _write(notebook: Node, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


def _pipeline(course: Course, ps: str, folder: Path, untouched: bool = True) -> Pipeline:
    pipeline = Pipeline(course, ps, folder)
    otter = Otter(folder)
    try:
        master = folder / "master" / f"{ps}.ipynb"
        _run([AUTOGRADER, "--course", course.root, "export", "otter", ps, "--out", master], cwd=ROOT, folder=folder)
        pipeline.master = master
        # -v makes otter assign say whether its tests against the solutions passed.
        pipeline.assign_log = otter("assign", "-v", master.name, "dist", cwd=master.parent)
        dist = master.parent / "dist"
        zips = sorted((dist / "autograder").glob(f"{ps}-autograder_*.zip"))
        assert len(zips) == 1, f"otter assign made {len(zips)} autograder zips"
        pipeline.autograder_zip = zips[0]
        pipeline.student = dist / "student" / f"{ps}.ipynb"
        pipeline.autograder_notebook = dist / "autograder" / f"{ps}.ipynb"

        source = read_notebook(course.source_notebook(ps))
        student = read_notebook(pipeline.student)
        submissions = {
            "solution": _write(with_answers(student, solution_answers(source)), folder / "solution" / f"{ps}.ipynb"),
        }
        if untouched:
            submissions["untouched"] = _write(student, folder / "untouched" / f"{ps}.ipynb")
        mistakes = load_catalogue(course.catalogue(ps))
        if mistakes:
            pipeline.mistake = mistakes[0]
            submissions["mistake"] = _write(mistake_notebook(student, source, pipeline.mistake),
                                            folder / "mistake" / f"{ps}.ipynb")

        for name, notebook in submissions.items():
            out = folder / f"results-{name}"
            out.mkdir()
            otter("run", "--no-logo", "-a", pipeline.autograder_zip, "-o", out, notebook, cwd=notebook.parent)
            pipeline.results[name] = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except Exception as error:  # noqa: BLE001 - reported by every test of this problem set
        pipeline.error = f"{type(error).__name__}: {error}"
    finally:
        otter.close()
    return pipeline


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory) -> dict[str, Pipeline]:
    """Every problem set of the course, and the tiny set below, through otter."""
    assert OTTER.exists(), f"otter-grader is not installed in {BIN}; install the test extra (pip install -e '.[test]')"
    tiny = tmp_path_factory.mktemp("tiny-course")
    (tiny / "nbgrader_config.py").write_text((ROOT / "nbgrader_config.py").read_text())
    _write(_tiny_source(), tiny / "source" / "tiny" / "tiny.ipynb")
    jobs = [(COURSE, ps, tmp_path_factory.mktemp(f"otter-{ps}")) for ps in PROBLEM_SETS]
    jobs.append((Course(tiny), "tiny", tmp_path_factory.mktemp("otter-tiny")))
    with ThreadPoolExecutor(len(jobs)) as pool:
        done = pool.map(lambda job: _pipeline(*job, untouched=job[1] in UNTOUCHED_SETS), jobs)
        return {pipeline.ps: pipeline for pipeline in done}


def _pipeline_of(pipelines: dict[str, Pipeline], ps: str) -> Pipeline:
    pipeline = pipelines[ps]
    assert pipeline.error is None, pipeline.error
    return pipeline


def _scores(results: dict) -> dict[str, tuple[float, float]]:
    """Question -> (score, possible), from otter's results.json (Gradescope's format)."""
    return {test["name"]: (test["score"], test["max_score"]) for test in results["tests"] if "max_score" in test}


def _outputs(results: dict) -> dict[str, str]:
    return {test["name"]: test.get("output", "") for test in results["tests"]}


def _test_cells(ps: str) -> dict[str, float]:
    """The source's graded test cells and their points."""
    return {grade_id(cell): float(nbgrader_metadata(cell)["points"])
            for cell in read_notebook(COURSE.source_notebook(ps)).cells
            if cell.cell_type == "code" and nbgrader_metadata(cell).get("grade") and not nbgrader_metadata(cell).get("solution")}


# --------------------------------------------------------------------------- otter assign


@pytest.mark.parametrize("ps", PROBLEM_SETS)
def test_otter_assign_builds_the_assignment_and_its_solutions_pass(pipelines, ps):
    pipeline = _pipeline_of(pipelines, ps)
    assert "All autograder tests passed" in pipeline.assign_log, pipeline.assign_log[-3000:]
    assert pipeline.autograder_zip.stat().st_size > 0
    assert pipeline.student.is_file() and pipeline.autograder_notebook.is_file()
    with zipfile.ZipFile(pipeline.autograder_zip) as archive:
        names = set(archive.namelist())
        assert {f"tests/{test}.py" for test in _test_cells(ps)} <= names
        assert "otter_config.json" in names
        # The grader's tests have both cases of every test cell (each of these has hidden tests).
        for test in _test_cells(ps):
            text = archive.read(f"tests/{test}.py").decode()
            cases = [node.name for node in ast.parse(text).body if isinstance(node, ast.FunctionDef)]
            assert cases == [f"{test}_visible", f"{test}_hidden"]
            assert "all_or_nothing = True" in text


@pytest.mark.parametrize("ps", PROBLEM_SETS)
def test_the_student_notebook_is_the_release_without_hidden_tests_or_solutions(pipelines, ps):
    pipeline = _pipeline_of(pipelines, ps)
    student = read_notebook(pipeline.student)
    release = read_notebook(COURSE.release_notebook(ps))
    source = read_notebook(COURSE.source_notebook(ps))

    # Every answer cell is what nbgrader's release gives the student.
    answers = {grade_id(cell): cell.source.rstrip() for cell in student.cells if nbgrader_metadata(cell).get("solution")}
    expected = {grade_id(cell): cell.source.rstrip() for cell in release.cells if nbgrader_metadata(cell).get("solution")}
    assert answers == expected

    # Only public test cases reach the student, one per test cell (all of these have visible tests).
    tests = student.metadata["otter"]["tests"]
    assert set(tests) == set(_test_cells(ps))
    for name, text in tests.items():
        cases = [node for node in ast.parse(text).body if isinstance(node, ast.FunctionDef)]
        assert [case.name for case in cases] == [f"{name}_visible"]
        assert "hidden=True" not in text

    secrets = _secret_lines(source) - _lines_of(release)
    assert secrets, "the leak check has nothing to look for"
    assert not secrets & _lines_of(student), "the student notebook holds hidden tests or solutions"
    # The same check finds them where they belong: in otter's autograder (solutions) notebook.
    assert secrets & _lines_of(read_notebook(pipeline.autograder_notebook))


def _normalised(code: str) -> set[str]:
    """The lines of a piece of code, stripped, also as ast.unparse writes them (otter's test files
    are unparsed code); lines too short to mean anything are left out."""
    lines = {line.strip() for line in code.splitlines()}
    try:
        tree = ast.parse(code)
    except SyntaxError:
        pass
    else:
        for node in ast.walk(tree):
            if isinstance(node, ast.stmt) and not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.For,
                                                                    ast.While, ast.If, ast.With, ast.Try)):
                lines |= {line.strip() for line in ast.unparse(node).splitlines()}
    return {line for line in lines if len(line) >= 20 and not line.startswith("#")}


def _lines_of(notebook: Node) -> set[str]:
    """Everything a notebook shows as code: its cells, and otter's tests in its metadata."""
    lines: set[str] = set()
    for cell in notebook.cells:
        lines |= _normalised(cell.source)
    for text in notebook.metadata.get("otter", {}).get("tests", {}).values():
        lines |= _normalised(text)
    return lines


def _secret_lines(source: Node) -> set[str]:
    """The hidden tests and the solutions of a source notebook, line by line."""
    secret: set[str] = set()
    for cell in source.cells:
        if cell.cell_type != "code":
            continue
        meta = nbgrader_metadata(cell)
        if meta.get("grade") and not meta.get("solution"):
            text, hidden = split_hidden_tests(cell.source)
            lines = text.splitlines()
            secret |= _normalised("\n".join(line for number, line in enumerate(lines, 1) if number in hidden))
        elif meta.get("solution"):
            inside, region = False, []
            for line in cell.source.splitlines():
                if BEGIN_SOLUTION.match(line) or END_SOLUTION.match(line):
                    inside = bool(BEGIN_SOLUTION.match(line))
                elif inside:
                    region.append(line)
            secret |= _normalised("\n".join(region))
    return secret


# --------------------------------------------------------------------------- otter run


@pytest.mark.parametrize("ps", PROBLEM_SETS)
def test_otter_gives_the_instructors_answers_full_marks(pipelines, ps):
    results = _pipeline_of(pipelines, ps).results["solution"]
    scores = _scores(results)
    assert {name: possible for name, (_, possible) in scores.items()} == _test_cells(ps)
    assert {name: score for name, (score, _) in scores.items()} == _test_cells(ps), _outputs(results)
    assert sum(score for score, _ in scores.values()) == FULL_MARKS


@pytest.mark.parametrize("ps", UNTOUCHED_SETS)
def test_otter_gives_the_untouched_notebook_nothing(pipelines, ps):
    results = _pipeline_of(pipelines, ps).results["untouched"]
    scores = _scores(results)
    assert set(scores) == set(_test_cells(ps))
    assert sum(possible for _, possible in scores.values()) == FULL_MARKS
    assert all(score == 0 for score, _ in scores.values())
    outputs = _outputs(results)
    assert all("NotImplementedError" in outputs[name] for name in scores)


@pytest.mark.parametrize("ps", PROBLEM_SETS)
def test_otter_takes_the_points_of_a_catalogued_mistake(pipelines, ps):
    pipeline = _pipeline_of(pipelines, ps)
    mistake = pipeline.mistake
    results = pipeline.results["mistake"]
    scores, outputs = _scores(results), _outputs(results)
    points = _test_cells(ps)
    for test in mistake.loses:
        assert scores[test] == (0, points[test]), f"{mistake.id} kept points on {test}"
        for phrase in mistake.feedback:
            assert phrase.lower() in outputs[test].lower(), f"{test}: otter's output does not name {mistake.id}"
    total = sum(score for score, _ in scores.values())
    assert total <= FULL_MARKS - sum(points[test] for test in mistake.loses)
    assert total > 0  # one wrong function, not a wrong notebook: the other exercises keep points


# --------------------------------------------------------------------------- the export itself


def test_the_export_is_deterministic(tmp_path):
    for ps in PROBLEM_SETS[:2]:
        paths = [tmp_path / f"{n}" / f"{ps}.ipynb" for n in (1, 2)]
        for path in paths:
            subprocess.run([str(AUTOGRADER), "export", "otter", ps, "--out", str(path)], cwd=ROOT, check=True,
                           capture_output=True)
        assert paths[0].read_bytes() == paths[1].read_bytes()
        nbformat.validate(nbformat.read(paths[0], as_version=4))
        master = json.loads(paths[0].read_text(encoding="utf-8"))
        config = master["cells"][0]
        assert config["cell_type"] == "raw" and config["source"].startswith("# ASSIGNMENT CONFIG")
        assert f'name: "{ps}"' in config["source"] and "ok_format: false" in config["source"]
        assert "autograder.checks" in config["source"]
        questions = [cell["source"] for cell in master["cells"]
                     if cell["cell_type"] == "raw" and cell["source"].startswith("# BEGIN QUESTION")]
        assert len(questions) == len(_test_cells(ps))
        assert not any("### BEGIN SOLUTION" in cell["source"] or "### BEGIN HIDDEN TESTS" in cell["source"]
                       for cell in master["cells"])


def test_an_unknown_problem_set_is_a_clear_error(tmp_path):
    result = subprocess.run([str(AUTOGRADER), "export", "otter", "ps99_nothing", "--out", str(tmp_path / "x.ipynb")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "There is no problem set 'ps99_nothing'" in result.stderr
    assert "ps05_derivatives" in result.stderr  # the known sets are listed
    assert not (tmp_path / "x.ipynb").exists()


def _meta(**values):
    base = {"grade": False, "locked": False, "solution": False, "schema_version": 3, "task": False}
    base.update(values)
    return {"nbgrader": base}


def _source(*cells) -> Node:
    notebook = new_notebook(cells=list(cells))
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return json.loads(json.dumps(notebook), object_hook=Node)


SETUP = new_code_cell("import numpy as np\nfrom autograder.checks import check_close",
                      metadata=_meta(grade_id="setup", locked=True))


def _answer(name: str, body: str = "return 2 * x"):
    return new_code_cell(f"def {name}(x):\n    ### BEGIN SOLUTION\n    {body}\n    ### END SOLUTION",
                         metadata=_meta(grade_id=name, solution=True))


def _test(name: str, code: str, points: float = 1):
    return new_code_cell(code, metadata=_meta(grade_id=name, grade=True, locked=True, points=points))


def _kinds(master: dict) -> list[str]:
    """The master notebook as a list: raw cells by their first line, other cells by type."""
    return [cell["source"].split("\n")[0] if cell["cell_type"] == "raw" else cell["cell_type"]
            for cell in master["cells"][2:]]


def _tiny_source() -> Node:
    """Two answers with a read-only cell between them and one test cell for both; a test cell
    with hidden tests only; an answer no test follows."""
    return _source(
        SETUP,
        _answer("double"),
        new_code_cell("HELPER = 3", metadata=_meta(grade_id="helper", locked=True)),
        _answer("triple", "return HELPER * x"),
        _test("test_both", "check_close(double(1.0), 2.0)\ncheck_close(triple(1.0), 3.0)", 3),
        _test("test_again", "### BEGIN HIDDEN TESTS\ncheck_close(double(2.0), 4.0)\n### END HIDDEN TESTS", 2),
        _answer("unused"),
    )


def test_answers_go_to_the_question_of_the_next_test_cell():
    master = otter_master_notebook(_tiny_source(), "tiny")
    assert _kinds(master) == [
        "code",
        "# BEGIN QUESTION", "# BEGIN SOLUTION", "code", "# END SOLUTION", "code",
        "# BEGIN SOLUTION", "code", "# END SOLUTION", "# BEGIN TESTS", "code", "# END TESTS", "# END QUESTION",
        "# BEGIN QUESTION", "# BEGIN TESTS", "code", "# END TESTS", "# END QUESTION",
        "# BEGIN QUESTION", "# BEGIN SOLUTION", "code", "# END SOLUTION", "# END QUESTION",
    ]
    questions = [cell["source"] for cell in master["cells"] if cell["source"].startswith("# BEGIN QUESTION")]
    assert questions == [
        '# BEGIN QUESTION\nname: "test_both"\npoints: 3\nall_or_nothing: true\n',
        '# BEGIN QUESTION\nname: "test_again"\npoints: 2\nall_or_nothing: true\n',
        '# BEGIN QUESTION\nname: "unused"\npoints: 0\nall_or_nothing: true\n',
    ]
    hidden_only = [cell["source"] for cell in master["cells"] if "def test_again" in cell["source"]]
    assert len(hidden_only) == 1 and "hidden: true" in hidden_only[0]


def test_otter_grades_the_tiny_sets_unusual_questions(pipelines):
    pipeline = _pipeline_of(pipelines, "tiny")
    assert "All autograder tests passed" in pipeline.assign_log, pipeline.assign_log[-3000:]
    assert _scores(pipeline.results["solution"]) == {"test_both": (3, 3), "test_again": (2, 2)}
    student = read_notebook(pipeline.student)
    assert "def test_again" not in json.dumps(student)  # its only case is hidden
    assert [cell.source for cell in student.cells if "def unused" in cell.source] == [
        "def unused(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"]


def test_a_test_cell_becomes_a_function_of_the_names_it_reads():
    code = ('MESSAGE = """two\n   lines"""\n'
            "value = double(x0)\n"
            "def helper(t):\n    return np.sin(t) + offset\n"
            "offset = 1.0\n"
            "check_close(helper(value), np.sin(value) + 1.0, what=MESSAGE)\n"
            "### BEGIN HIDDEN TESTS\n"
            "total = total + 1\n"
            "assert isinstance(value, float)\n"
            "### END HIDDEN TESTS")
    master = otter_master_notebook(_source(SETUP, _answer("double"), _test("test_double", code)), "tiny")
    cells = {cell["source"].split("def ")[1].split("(")[0]: cell["source"]
             for cell in master["cells"] if "# BEGIN TEST CONFIG" in cell["source"]}
    visible, hidden = cells["test_double_visible"], cells["test_double_hidden"]
    # Names from the notebook (and x0, which the notebook must supply) are parameters; names
    # the test binds are not, except `total`, which it reads before binding; builtins neither.
    assert "def test_double_visible(check_close, double, np, x0):" in visible
    assert "def test_double_hidden(check_close, double, np, total, x0):" in hidden
    assert 'MESSAGE = """two\n   lines"""' in visible  # the string keeps its content
    body = ast.parse(hidden.split('""" # END TEST CONFIG\n', 1)[1]).body
    assert ast.dump(ast.Module(body[0].body, [])) == ast.dump(ast.parse(split_hidden_tests(code)[0]))
    assert ast.unparse(body[1]) == "test_double_hidden(check_close, double, np, total, x0)"
    # Running the function in a namespace like a student's passes, as the cell does.
    namespace: dict = {}
    exec(hidden.split('""" # END TEST CONFIG\n', 1)[1].rsplit("\n\n", 1)[0], namespace)
    import numpy as np

    from autograder.checks import check_close

    namespace["test_double_hidden"](check_close, lambda x: 2.0 * x, np, 0, 0.5)


@pytest.mark.parametrize("cell, message", [
    (_test("test_x", "import numpy as np  # SEED"), "# SEED"),
    (new_markdown_cell("```otter\nname: x\n```"), "```otter"),
    (new_code_cell("x = 1\ny = 2  # IGNORE"), "# IGNORE"),
    (new_code_cell("def f(x):\n    return x  # SOLUTION\n", metadata=_meta(grade_id="f", solution=True)), "# SOLUTION"),
    (new_markdown_cell("Explain.", metadata=_meta(grade_id="essay", solution=True, grade=True, points=2)),
     "manually graded"),
    (_test("test_y", "%timeit double(1.0)"), "magics"),
    (_test("test_z", "def f():\n    global seen\n    seen = 1\nf()"), "global seen"),
])
def test_cells_otter_assign_would_misread_are_refused_with_a_reason(cell, message):
    with pytest.raises(OtterExportError, match=message.replace("(", r"\(").replace("*", r"\*")):
        otter_master_notebook(_source(SETUP, _answer("double"), cell), "tiny")


def test_a_test_that_needs_an_earlier_test_cells_names_is_refused():
    source = _source(SETUP, _answer("double"), _test("test_a", "def cube(x):\n    return x ** 3\ncheck_close(double(1.0), 2.0)"),
                     _answer("triple"), _test("test_b", "check_close(triple(cube(1.0)), 3.0)"))
    with pytest.raises(OtterExportError, match="cube, which only an earlier test cell defines"):
        otter_master_notebook(source, "tiny")


def test_lines_otter_would_only_misread_where_they_are_not_are_kept():
    answer = new_code_cell("# ignore negative x\ndef double(x):\n    ### BEGIN SOLUTION\n"
                           "    # SOLUTION: twice x\n    return 2 * x\n    ### END SOLUTION",
                           metadata=_meta(grade_id="double", solution=True))
    master = otter_master_notebook(_source(new_markdown_cell("# Ignore the noise"), SETUP, answer,
                                           _test("test_double", "check_close(double(1.0), 2.0)")), "tiny")
    # otter-assign drops a cell whose first line starts with "# ignore": a blank line first keeps it.
    heading = [cell["source"] for cell in master["cells"] if "Ignore the noise" in cell["source"]]
    assert heading == ["\n# Ignore the noise"]
    solution = [cell["source"] for cell in master["cells"] if "def double" in cell["source"]]
    assert solution == ["\n# ignore negative x\ndef double(x):\n    # BEGIN SOLUTION NO PROMPT\n"
                        "    # SOLUTION: twice x\n    return 2 * x\n    # END SOLUTION\n"
                        '    """ # BEGIN PROMPT\n    # YOUR CODE HERE\n    raise NotImplementedError()\n'
                        '    """; # END PROMPT']
