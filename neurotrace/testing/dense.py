"""A dictionary with a planted dense feature, for tests of how features and intervene treat dense features."""

import json

import numpy as np
import torch


def planted_dense(lab, fit: str, name: str, sparsity: bool = True) -> tuple[str, int]:
    """``fit``'s dictionary plus one feature (index ``d_sae``) that fires on every token with activation 1000, the
    largest (encoder column 0, bias 1000; ``k`` one larger, so every other feature keeps exactly its activations),
    its decoder row a seeded unit vector; written as a SAELens folder ``name`` under the lab's ``inputs/``, with
    SAELens' sparsity.safetensors (the fit's densities and 1.0 for the planted one) when ``sparsity``. Returns
    (the reference to pass as ``dictionary``, the planted feature's index)."""
    from safetensors.torch import save_file

    from neurotrace.lab.sae import load_dictionary
    from neurotrace.lab.sae.density import sparsity_tensors

    d = load_dictionary(lab, fit)
    t = d.tensors()
    direction = torch.randn(d.cfg.d_in, generator=torch.Generator().manual_seed(0))
    t["W_enc"] = torch.cat([t["W_enc"], torch.zeros(d.cfg.d_in, 1)], 1)
    t["b_enc"] = torch.cat([t["b_enc"], torch.tensor([1000.0])])
    t["W_dec"] = torch.cat([t["W_dec"], (direction / direction.norm())[None]], 0)
    cfg = d.saelens_cfg()
    cfg.update(d_sae=d.cfg.d_sae + 1, k=int(d.cfg.k) + 1)
    folder = lab.store.root.parent / "inputs" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg), encoding="utf-8")
    save_file({k: v.contiguous() for k, v in t.items()}, str(folder / "sae_weights.safetensors"))
    if sparsity:
        save_file(sparsity_tensors(np.append(d.density.rates, 1.0)), str(folder / "sparsity.safetensors"))
    return name, d.cfg.d_sae
