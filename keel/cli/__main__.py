"""`python -m keel.cli` is the `keel` command."""

from keel.cli import main

main()
