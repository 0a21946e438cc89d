"""``python -m kongtx.cli``: the ``kong`` command without the console script."""

import sys

from kongtx.cli import main

sys.exit(main())
