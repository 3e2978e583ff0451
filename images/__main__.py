"""``python -m images <command>``: train, sample, evaluate, all (the main job), bench, export, classifier.

Run ``python -m images <command> --help`` for each command's flags.  Errors a user can cause are
printed as one line (``error: ...``) with exit status 2 (3 for a non-finite loss, 128 + signal after
SIGTERM/SIGINT, the checkpoint written).
"""
from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
