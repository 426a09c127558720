"""`python -m squeezespan` is the `sns` command."""

import sys

from .cli import main

sys.exit(main())
