"""The observers of what runs: per region runtime (kubernetes: watch the API; local: supervise
processes), each reporting replica observations through `record`, which keeps placements' summarised
state, the history of transitions and the audit trail of failures."""
