"""`python -m simulator`: run the engine simulator (see simulator/app.py)."""

from simulator.app import main

main()
