"""``python -m minirerank_integrations.cli``: the ``minirerank`` command without its console script."""

import sys

from . import main

sys.exit(main())
