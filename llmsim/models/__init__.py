"""llmsim.models."""
