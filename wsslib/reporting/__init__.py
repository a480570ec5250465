"""Results JSON with provenance, and the figures the notebooks show."""
