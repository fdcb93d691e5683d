"""How forwards run: greedy stepwise generation, sampling, pooled states, precision (float32/bfloat16), the backend/remote request
fields, the nnsight backend (the one dispatch: :func:`~neurotrace.lab.model.runtime.nnsight_backend.traced`)
and NDIF."""
