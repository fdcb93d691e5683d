"""Write small dictionaries with neurotrace's own export into OUT_DIR/ours_*/ (run by saelens_golden.sh).

Each is a freshly initialised neurotrace SAE/transcoder (seeded; input_scale != 1 so the fold is
exercised) exported with :func:`neurotrace.lab.sae.export.dictionary_from_sae` in SAELens' layout,
plus ``inputs.safetensors`` (``x``) and our own ``ours_io.safetensors`` (``acts``, ``out``).
saelens_golden.py then loads each with the real SAELens and records its outputs on ``x``.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from neurotrace.lab.sae.architectures.base import SAEConfig
from neurotrace.lab.sae.architectures.registry import ARCHITECTURES, build_sae
from neurotrace.lab.sae.export import dictionary_from_sae

D_IN, D_SAE, D_OUT, N = 16, 48, 12, 32


def main(out: Path) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N, D_IN, generator=gen) * 2
    # SAEs of every architecture; transcoders of those SAELens can read (it has no TopK transcoder)
    cases = [(arch, False, False) for arch in sorted(ARCHITECTURES)] + [
        ("relu", True, False), ("relu", True, True), ("batchtopk", True, False), ("jumprelu", True, True)]
    for arch, transcoder, skip in cases:
        extra = {"out_site": "blocks.1.hook_mlp_out", "d_out": D_OUT, "skip": skip,
                 "output_scale": 0.6} if transcoder else {}
        site = "blocks.1.ln2.hook_normalized" if transcoder else "blocks.1.hook_resid_post"
        cfg = SAEConfig(architecture=arch, d_in=D_IN, d_sae=D_SAE, k=4 if "topk" in arch else None,
                        site=site, model="golden-model", input_scale=1.7, **extra)
        sae = build_sae(cfg)
        sae.init_weights(gen, b_dec=None)
        with torch.no_grad():
            for p in sae.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
            if arch == "batchtopk":
                sae.threshold.fill_(0.3)
        d = dictionary_from_sae(sae, source="golden", kind="run")
        name = f"ours_{arch}" + ("_skip" if skip else "") + ("_transcoder" if transcoder else "")
        d.save_saelens(out / name)
        with torch.no_grad():
            acts = d.encode(x)
            ours = {"acts": acts, "out": d(x)}
        save_file({"x": x.contiguous()}, str(out / name / "inputs.safetensors"))
        save_file({k: v.contiguous() for k, v in ours.items()}, str(out / name / "ours_io.safetensors"))
        print(name, d.cfg.architecture)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
