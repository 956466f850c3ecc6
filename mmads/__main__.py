"""``python -m mmads`` runs the CLI (the main job starts its streaming jobs this way)."""

import sys

from mmads.cli import main

if __name__ == "__main__":  # a spawned data-parallel rank imports this module as __mp_main__
    sys.exit(main())
