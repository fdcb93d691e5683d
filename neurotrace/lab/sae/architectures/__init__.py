"""The dictionary architectures (SAE base class and config; ReLU-L1, TopK, BatchTopK, JumpReLU; the sparse
kernels they share) and the registry that builds one from a config or a saved state."""
