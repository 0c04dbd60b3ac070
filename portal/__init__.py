"""The Modelfleet portal: the self-service control plane (FastAPI)."""
