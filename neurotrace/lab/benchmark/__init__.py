"""neurotrace.lab.benchmark."""
