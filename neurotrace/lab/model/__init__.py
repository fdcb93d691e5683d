"""Everything about reaching inside a HuggingFace model: adapters, sites, hooks, loading, the cache.

Modules are imported directly (``neurotrace.lab.model.hooks``); this package is the lab's lowest
layer above errors, progress and the run store.
"""
