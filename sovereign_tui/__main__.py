import sys

from sovereign_tui.cli import main

sys.exit(main())
