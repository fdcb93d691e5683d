"""neurotrace.lab.clamping."""
