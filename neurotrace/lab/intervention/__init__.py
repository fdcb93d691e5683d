"""neurotrace.lab.intervention."""
