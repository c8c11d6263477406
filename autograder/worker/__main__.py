"""Entry point of a worker process: ``python -m autograder.worker FD``."""

import sys

from autograder.worker.runtime import serve_forever

if __name__ == "__main__":
    serve_forever(int(sys.argv[1]))
