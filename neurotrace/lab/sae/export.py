"""A fitted SAE or transcoder as a :class:`~neurotrace.lab.sae.dictionary.Dictionary` and a SAELens folder.

Training works in a scaled space (inputs times ``input_scale``, see :mod:`neurotrace.lab.sae.architectures.base`);
the export folds the factors into the weights, as SAELens' ``fold_activation_norm_scaling_factor``
does, so the saved dictionary speaks model units with ``normalize_activations='none'``:

    SAE:        W_enc' = s W_enc,  W_dec' = W_dec / s,  b_dec' = b_dec / s   (threshold unchanged)
    transcoder: W_enc' = s_in W_enc,  W_dec' = W_dec / s_out,  b_dec' = b_dec / s_out,
                W_skip' = W_skip s_in / s_out

(``pre`` is unchanged by the fold, so TopK picks and JumpReLU thresholds stay the same). A BatchTopK
SAE is exported as SAELens does: architecture ``jumprelu`` with its running threshold in every
feature's ``threshold``; TopK keeps ``k``; ReLU-L1 is SAELens' ``standard``.
"""

from typing import Any

import torch

from neurotrace.lab.sae.architectures.base import SAE
from neurotrace.lab.sae.dictionary import Dictionary, DictionaryConfig

#: our architecture -> (SAELens architecture of the export, activation)
_EXPORT = {"relu": ("standard", "relu"), "topk": ("topk", "topk"), "batchtopk": ("jumprelu", "jumprelu"),
           "jumprelu": ("jumprelu", "jumprelu")}
_TRANSCODER = {"standard": "transcoder", "topk": "topk_transcoder", "jumprelu": "jumprelu_transcoder"}


@torch.no_grad()
def dictionary_from_sae(sae: SAE, source: str = "", kind: str = "run") -> Dictionary:
    """The inference dictionary of a fitted SAE/transcoder, scalings folded in (model units)."""
    c = sae.cfg
    s_in = float(c.input_scale)
    s_out = float(getattr(c, "output_scale", None) or s_in)
    transcoder = bool(getattr(c, "out_site", "") and c.out_site != c.site) or bool(getattr(c, "transcoder", False))
    arch, activation = _EXPORT[c.architecture]
    t = {k: v.detach().float().cpu() for k, v in sae.state_dict().items()}
    out: dict[str, torch.Tensor] = {"W_enc": t["W_enc"] * s_in, "b_enc": t["b_enc"].clone(),
                                    "W_dec": t["W_dec"] / s_out, "b_dec": t["b_dec"] / s_out}
    if activation == "jumprelu":
        out["threshold"] = sae.export_threshold().float().cpu()
    skip = "W_skip" in t
    if skip:
        out["W_skip"] = t["W_skip"] * (s_in / s_out)
    if transcoder:
        arch = _TRANSCODER[arch]
        arch = arch.replace("transcoder", "skip_transcoder") if skip else arch
    d_out = int(out["W_dec"].shape[1])
    cfg = DictionaryConfig(architecture=arch, activation=activation, d_in=c.d_in, d_sae=c.d_sae, d_out=d_out,
                           k=c.k if activation == "topk" else None, site=c.site,
                           out_site=getattr(c, "out_site", "") or c.site, hook_name=c.site,
                           hook_name_out=getattr(c, "out_site", "") or c.site, transcoder=transcoder, skip=skip,
                           apply_b_dec_to_input=not transcoder, model=c.model, source=source, kind=kind,
                           capture_run_id=c.capture_run_id)
    return Dictionary(cfg, out).eval()


def saelens_metadata(extra: dict[str, Any]) -> dict[str, Any]:
    """Metadata fields a fit_sae export adds to cfg.json (SAELens keeps unknown metadata keys)."""
    return {k: v for k, v in extra.items() if v is not None}
