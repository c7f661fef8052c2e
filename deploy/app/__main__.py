"""``python deploy/app ...`` (or ``python -m app`` from ``deploy/``): run the AMIR restoration application."""

import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # python deploy/app: this folder is sys.path[0]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from app import main
else:
    from .app import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
