"""llmsim.hardware."""
