"""``python -m hwbed.report``: see :mod:`hwbed.report.cli`."""

import sys

from hwbed.report.cli import main

sys.exit(main())
