"""``python -m mmads`` runs the CLI (the main job starts its streaming jobs this way)."""

import sys

from mmads.cli import main

sys.exit(main())
