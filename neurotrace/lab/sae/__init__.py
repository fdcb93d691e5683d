"""neurotrace.lab.sae."""
