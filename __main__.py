"""Modelfleet's Pulumi program: the stack's regions, GPU node pools and model servings.

Everything is computed by the pure core (`fleet`); see `components.program.main`.
"""

from pathlib import Path

from components.program import main

main(Path(__file__).parent / "stacks")
