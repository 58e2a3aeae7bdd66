"""``python -m elbox``: the command line."""

from .cli import main

main()
