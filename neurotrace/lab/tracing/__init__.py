"""neurotrace.lab.tracing."""
