"""stormsim's experiments layer: shipped scenarios, the CLI, reports, figures and output files."""
