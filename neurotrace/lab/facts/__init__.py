"""neurotrace.lab.facts."""
