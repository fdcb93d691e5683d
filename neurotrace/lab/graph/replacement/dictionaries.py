"""Transcoders from dictionary references (:func:`neurotrace.lab.sae.dictionary.load_dictionary`): a fit_sae run,
a SAELens / Gemma Scope 2 folder or a SAELens release id per layer, turned into a :class:`TranscoderSet`.

A dictionary encodes ``act(((x - b_dec) if apply_b_dec_to_input else x) @ W_enc + b_enc)``; the subtraction is
folded into the encoder bias (``b_enc - b_dec @ W_enc``) so the transcoder reads ``x`` itself. TopK
dictionaries and those that rescale activations by decoder norms have no per-feature linear read-out of this
form and are refused, as are dictionaries that are not transcoders from the MLP input to the MLP output.
"""

import hashlib
import re

from neurotrace.lab.errors import InputError
from neurotrace.lab.explain import dictionary_labels
from neurotrace.lab.graph.replacement.transcoders import Transcoder, TranscoderSet
from neurotrace.lab.lab import Lab
from neurotrace.lab.sae import Dictionary, load_dictionary

FIELD = "transcoders.refs"
SITES = (r"blocks\.(\d+)\.ln2\.hook_normalized", r"blocks\.(\d+)\.hook_mlp_out")


def _transcoder(d: Dictionary, i: int) -> tuple[int, Transcoder]:
    c = d.cfg
    m_in, m_out = re.fullmatch(SITES[0], c.site), re.fullmatch(SITES[1], c.out_site)
    if not (m_in and m_out and m_in.group(1) == m_out.group(1)):
        raise InputError(f"{FIELD}[{i}]", f"{c.source} reads {c.site} and writes {c.out_site}",
                         fix="give transcoders from blocks.{L}.ln2.hook_normalized to blocks.{L}.hook_mlp_out")
    if c.activation == "topk" or c.rescale_acts_by_decoder_norm:
        raise InputError(f"{FIELD}[{i}]", f"{c.source} is a {c.architecture} dictionary (TopK or decoder-norm "
                         "rescaled), which graph does not linearise", fix="use ReLU or JumpReLU transcoders")
    b_enc = d.b_enc - d.b_dec @ d.W_enc if c.apply_b_dec_to_input else d.b_enc
    w_skip = None if d.W_skip is None else d.W_skip
    return int(m_in.group(1)), Transcoder(d.W_enc.T.contiguous(), b_enc, d.W_dec, d.b_dec, d.threshold, w_skip)


def dictionary_transcoders(lab: Lab, refs: list[str]) -> TranscoderSet:
    layers: dict[int, Transcoder] = {}
    refs_by_layer: dict[int, str] = {}
    names: dict[tuple[int, int], str] = {}
    digests = []
    for i, ref in enumerate(refs):
        d = load_dictionary(lab, ref, field=f"{FIELD}[{i}]")
        layer, tc = _transcoder(d, i)
        if layer in layers:
            raise InputError(f"{FIELD}[{i}]", f"two dictionaries for layer {layer}", fix="give one per layer")
        layers[layer] = tc
        refs_by_layer[layer] = ref
        names.update({(layer, int(k)): v.explanation for k, v in dictionary_labels(lab, d).items() if k.isdigit()})
        digests.append(d.cfg.sha256)
    if sorted(layers) != list(range(len(layers))):
        raise InputError(f"{FIELD}", f"the dictionaries cover layers {sorted(layers)}, not 0..{len(layers) - 1}",
                         fix="give one transcoder for every layer of the model")
    sha = hashlib.sha256("".join(digests).encode()).hexdigest()
    return TranscoderSet([layers[k] for k in range(len(layers))], "ln2.hook_normalized", "hook_mlp_out",
                         f"{len(refs)} dictionaries", sha, refs_by_layer, names)
