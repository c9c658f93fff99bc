"""``python -m gadms`` is the ``gadms`` command (torchrun starts each rank this way).

The command line itself is loaded under the last line of defence too, so a library that fails to import is
one line and a log file, not a traceback.
"""

from gadms.crash import last_line_of_defence

with last_line_of_defence(lambda: "gadms"):
    from gadms.cli import main

main()
