"""`python -m squeezespan` is the `sns` command."""

import sys

from .entry import main

sys.exit(main())
