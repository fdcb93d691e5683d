"""Everything about a model the lab runs, in three rooms by concern:

* :mod:`~neurotrace.lab.model.weights`: where weights come from (catalog, GGUF, placement, the embedded
  models, loading, the cache);
* :mod:`~neurotrace.lab.model.access`: how to reach inside (adapters, the site grammar, hooks, the
  target-token rule, neuron references, the word-level tokenizer);
* :mod:`~neurotrace.lab.model.runtime`: how forwards run (stepwise generation, sampling, pooling, the
  backend fields, nnsight, NDIF).

Modules are imported directly (``neurotrace.lab.model.access.hooks``); this package is the lab's lowest
layer above errors, progress and the run store. Inside it ``runtime`` sits above ``weights`` and
``access`` (import-linter contract in pyproject.toml).
"""
