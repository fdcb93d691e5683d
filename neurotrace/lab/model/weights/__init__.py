"""Where weights come from: the catalog, GGUF files, device placement, the embedded models, loading
(:class:`~neurotrace.lab.model.weights.loading.LoadedModel`) and the lab's model cache."""
