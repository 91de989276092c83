"""llmsim.engine."""
