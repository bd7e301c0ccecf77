"""Allows `python -m kubetune`."""

from kubetune.cli import main

main()
