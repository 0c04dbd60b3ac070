"""`python -m portal`: serve the portal (and, later, the gateway in the same process)."""

from portal.cli import main

main()
