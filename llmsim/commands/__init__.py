"""llmsim.commands."""
