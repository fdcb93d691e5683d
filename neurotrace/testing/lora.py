"""Small LoRA adapters for tests: random low-rank updates written in the shipped adapters' layout."""

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file


def write_adapter(model_dir: str | Path, out: Path, *, base: str, targets: Sequence[str] = ("down_proj",),
                  rank: int = 2, scale: float = 0.5, seed: int = 0) -> Path:
    """Write ``out/adapter_model.safetensors`` + ``adapter_config.json``: rank-``rank`` matrices for every
    module of ``model_dir`` whose name ends with one of ``targets`` (seeded, A and B both non-zero)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in targets and isinstance(module, torch.nn.Linear):
            tensors[f"{name}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=gen) * scale
            tensors[f"{name}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=gen) * scale
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps({"kind": "lora", "base": base, "rank": rank,
                                                          "alpha": rank, "target_modules": list(targets)}))
    return out
