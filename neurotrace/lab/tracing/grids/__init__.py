"""How tracing's restored grids are computed: the batched full forward (``grid``), the exact fast paths
(``fast_gpt2``, ``fast_decoder``) and their row plan (``rowplan``), the same grids through nnsight
(``nnsight_grid``), and the attribution-patching check (``approx_check``).

Modules are imported directly; the tracing face (:mod:`neurotrace.lab.tracing`) is what other families use.
"""
