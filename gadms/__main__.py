"""``python -m gadms`` is the ``gadms`` command."""

from gadms.cli import main

main()
