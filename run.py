"""Synthesise multi-turn instruction dialogues by strategy reuse: `python run.py --seed FILE`."""

import sys

from cli.main import main

if __name__ == "__main__":
    sys.exit(main())
