"""`python -m stask` is the `stask` command."""

from stask.cli import main

main()
