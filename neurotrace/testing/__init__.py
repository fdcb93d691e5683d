"""Code that exists to check the rest: tiny models, reference oracles; imported by tests and bench only."""
