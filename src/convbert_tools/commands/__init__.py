"""The sub-commands of ``convbert``, one module each.

Each module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int`` (an exit
code below). A sub-command imports its framework inside ``run``, so that ``convbert --help`` and
the framework-free commands start in a fraction of a second. ``cli.py`` lists the modules.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # a problem with what the user gave: the file, key, value or flag is named on one line
EXIT_USAGE = 2  # argparse: unknown flag, missing argument
EXIT_MISMATCH = 3  # verify: PyTorch and Keras disagree beyond the tolerance
EXIT_INTERRUPTED = 128  # plus the signal number: 130 for Ctrl-C, 143 for SIGTERM (the shells' convention)
