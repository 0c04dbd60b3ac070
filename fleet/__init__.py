"""Modelfleet pure core: spec, catalogs, planner, rendering and rules. Never imports pulumi."""
