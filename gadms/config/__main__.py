"""``python -m gadms.config [FILE]``: write params.yaml from the schema (to FILE, else to stdout)."""

import sys

from gadms.config.render import main

sys.exit(main(sys.argv[1:]))
