"""python3 -m torpor: the torpor CLI."""
import sys

from .cli import main

sys.exit(main())
