"""neurotrace.lab.capture."""
