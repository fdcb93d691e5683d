"""neurotrace.lab.model."""
