"""llmsim.report."""
