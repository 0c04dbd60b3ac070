"""Modelfleet's CrossGuard policy pack (`validators`), and the offline runner (`offline`)."""
