#!/usr/bin/env python3
"""Set up the course's environment and run its main jobs, with nothing but Python 3.11+.

    python3 run.py demo     build the demo class and grade it
    python3 run.py test     check lint and types, then run the whole test suite
    python3 run.py shell    print how to activate the environment

The first run creates ``.venv/`` and installs the course's package into it; later runs
reinstall only when ``pyproject.toml`` has changed.  Extra arguments go to the command
(``python3 run.py test -k wire``).
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import venv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed-from"
LAB = ROOT / "lab"
LAB_BUILD = ROOT / "autograder" / "lab" / "labextension"
LAB_NAME = "autograder-lab"


def ensure_environment() -> None:
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text().strip() == wanted:
        return
    if not (BIN / "python").exists():
        print("Creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("Installing the course and its dependencies into .venv (about a minute the first time) ...",
          flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # The package installs the prebuilt lab extension as data files: never through the link that
    # ensure_lab_extension puts in its place, which points back into the work tree.
    lab_link = VENV / "share" / "jupyter" / "labextensions" / LAB_NAME
    if lab_link.is_symlink():
        lab_link.unlink()
    # The distribution was called `autograder` before it took a name of its own on the package index.
    subprocess.run([str(BIN / "python"), "-m", "pip", "uninstall", "--yes", "--quiet", "autograder"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    if not _installed_with_uv(f"{ROOT}[test]"):
        subprocess.run([*pip, "--editable", f"{ROOT}[test]"], check=True)
    STAMP.write_text(wanted)


def _installed_with_uv(requirement: str) -> bool:
    """Install ``requirement`` (editable) with uv, from the package index like pip: the same
    releases in seconds where pip takes a minute or more.  False when uv cannot be had or cannot
    install (offline, a private index only pip is configured for): pip installs then.
    ``AUTOGRADER_INSTALLER=pip`` skips uv."""
    if os.environ.get("AUTOGRADER_INSTALLER", "uv") == "pip":
        return False
    python = str(BIN / "python")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    got_uv = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "uv"],
                            check=False, **quiet).returncode == 0
    # Bytecode compiled now, as pip does: a process that cannot write it (the tests' unprivileged
    # user, many processes starting at once) would otherwise compile every module it imports.
    if got_uv and subprocess.run([python, "-m", "uv", "pip", "install", "--quiet", "--compile-bytecode",
                                  "--python", python, "--editable", requirement], check=False).returncode == 0:
        return True
    print("Note: uv could not install the environment; pip does it instead (a minute or two).", flush=True)
    return False



def _lab_sources_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted([LAB / "package.json", LAB / "package-lock.json", LAB / "tsconfig.json",
                        *LAB.glob("src/*"), *LAB.glob("style/*")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _stamped(stamp: Path, digest: str) -> bool:
    return stamp.is_file() and stamp.read_text().strip() == digest


def compile_lab_sources() -> None:
    """The half of the extension's build that needs no Python (npm's packages, TypeScript), when
    the sources changed; run while pip installs the environment."""
    npm, node = shutil.which("npm"), shutil.which("node")
    compiled = LAB / ".compiled-from"
    wanted = _lab_sources_digest()
    if not (npm and node) or _stamped(LAB_BUILD / ".built-from", wanted) or _stamped(compiled, wanted):
        return
    print("Building the JupyterLab extension (npm; a minute the first time) ...", flush=True)
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=LAB, check=True)
    subprocess.run([node, "node_modules/typescript/bin/tsc", "-p", "."], cwd=LAB, check=True)
    compiled.write_text(wanted)


def ensure_lab_extension() -> None:
    """Build the JupyterLab extension (the Check button) with npm when its sources changed, and
    put it where this environment's JupyterLab and Jupyter server find it."""
    wanted = _lab_sources_digest()
    if not _stamped(LAB_BUILD / ".built-from", wanted):
        node = shutil.which("node")
        if not (shutil.which("npm") and node):
            print("Note: Node.js and npm are not installed, so JupyterLab's Check button is not built. Install "
                  "them (for example `sudo apt-get install nodejs npm`) and run this again.", flush=True)
            return
        compile_lab_sources()
        core = subprocess.run([str(BIN / "python"), "-c", "import jupyterlab, os; "
                               "print(os.path.join(os.path.dirname(jupyterlab.__file__), 'staging'))"],
                              capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run([node, "node_modules/@jupyterlab/builder/lib/build-labextension.js", "--core-path", core, "."],
                       cwd=LAB, check=True, stdout=subprocess.DEVNULL)
        (LAB_BUILD / ".built-from").write_text(wanted)
    # As pip would place a prebuilt extension, and enable the server half.
    labextensions = VENV / "share" / "jupyter" / "labextensions"
    labextensions.mkdir(parents=True, exist_ok=True)
    link = labextensions / LAB_NAME
    if not link.is_symlink():
        if link.exists():
            shutil.rmtree(link)
        link.symlink_to(LAB_BUILD, target_is_directory=True)
    server_config = VENV / "etc" / "jupyter" / "jupyter_server_config.d"
    server_config.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(LAB / "jupyter-config" / "autograder.json", server_config / "autograder.json")


HUB_PROXY = VENV / "node" / "node_modules" / ".bin" / "configurable-http-proxy"


def ensure_hub_proxy() -> None:
    """JupyterHub's proxy (from npm), for the test that runs `autograder serve` as a hub service."""
    if HUB_PROXY.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        print("Note: npm is not installed, so the JupyterHub test will fail. Install Node.js and npm and run "
              "this again.", flush=True)
        return
    print("Installing JupyterHub's proxy (npm) ...", flush=True)
    subprocess.run([npm, "install", "--prefix", str(VENV / "node"), "--no-audit", "--no-fund", "--loglevel=error",
                    "configurable-http-proxy@5"], check=True)


def _postgres_installed() -> bool:
    return bool(shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def ensure_system_tools() -> None:
    """The page tests drive headless Chromium, the gradebook tests start a PostgreSQL server;
    install Debian's where we can."""
    missing = []
    if not any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")):
        missing.append("chromium")
    if not _postgres_installed():
        missing.append("postgresql")
    if not missing:
        return
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"Note: {' and '.join(missing)} not installed, so some tests will fail. Install them "
              f"(for example `sudo apt-get install {' '.join(missing)}`) and run the tests again.", flush=True)
        return
    print(f"Installing {', '.join(missing)} for the tests (apt-get) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def check_gates() -> list[int]:
    """Lint and types (seconds): each gate's exit code, every failure reported."""
    gates = [("lint (ruff)", [str(BIN / "ruff"), "check", "."]),
             ("types (mypy)", [str(BIN / "python"), "-m", "mypy"])]
    codes = []
    for name, gate in gates:
        print(f"Checking {name} ...", flush=True)
        codes.append(subprocess.call(gate, cwd=ROOT))
    return codes


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command not in ("demo", "test", "shell"):
        print(__doc__)
        return 2
    # npm and TypeScript work on the extension while the environment is installed and, for the
    # tests, while the gates (which need only the environment) check the code.
    with ThreadPoolExecutor(1) as background:
        compiling = background.submit(compile_lab_sources)
        ensure_environment()
        codes = check_gates() if command == "test" else []
        compiling.result()  # raises what the build raised
    ensure_lab_extension()
    if command == "shell":
        print(f"source {BIN / 'activate'}")
        return 0
    # As in an activated environment: nbgrader runs tools of its own (alembic) by name.
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ["VIRTUAL_ENV"] = str(VENV)
    if command == "demo":
        return subprocess.call([str(BIN / "autograder"), "demo", *rest], cwd=ROOT)
    ensure_system_tools()
    ensure_hub_proxy()
    # Two test processes per machine (pytest-xdist), each test file in one of them, so that a
    # file's shared fixtures (a graded class, the otter pipelines) are built once.
    parallel = [] if any(arg.startswith("-n") or arg == "-p" for arg in rest) else [
        "-n", "2", "--dist", "loadfile", "--no-loadscope-reorder"]
    codes.append(subprocess.call([str(BIN / "python"), "-m", "pytest", *parallel, *rest], cwd=ROOT))
    return next((code for code in codes if code), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
