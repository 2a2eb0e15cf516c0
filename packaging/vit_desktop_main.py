"""Entry point of the frozen app (both executables): the same ``main`` as ``vit-desktop``."""

import multiprocessing
import sys

from vit_desktop.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
