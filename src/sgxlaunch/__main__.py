"""``python -m sgxlaunch`` runs the command line."""

from sgxlaunch.cli import main

main()
