"""The replacement model a graph is built over: transcoders (trained here, loaded from circuit-tracer or
SAELens files, or neurotrace dictionaries) and the forward that runs them with frozen attention and norms."""
