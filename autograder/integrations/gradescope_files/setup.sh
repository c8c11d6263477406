#!/usr/bin/env bash
# Gradescope runs this once, when it builds the autograder image.
set -euo pipefail
cd "${AUTOGRADER_ROOT:-/autograder}/source"
python3 -m pip install --quiet ./package
