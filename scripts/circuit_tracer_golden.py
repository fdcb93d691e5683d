"""Write golden attribution graphs with the real circuit-tracer 0.5 (TransformerLens backend), for
tests/lab/graph/test_golden.py. Run it with the throwaway venv of scripts/circuit_tracer_venv.sh:

    bash scripts/circuit_tracer_venv.sh /tmp/ct && /tmp/ct/bin/python scripts/circuit_tracer_golden.py

It builds, from seeds, a tiny GPT-2 (2 layers, d_model 32, random LayerNorm weights and biases) with a
word-level tokenizer, and random per-layer JumpReLU transcoders (one with a skip connection), saves both in
tests/golden/circuit_tracer/ (the model as a HuggingFace directory, the transcoders in circuit-tracer's
layer_{L}.safetensors layout), runs circuit_tracer.attribute on fixed prompts, prunes with prune_graph
(0.8 / 0.98), scores with compute_graph_scores, and writes per case the adjacency, node bookkeeping and masks
(graph_<case>.safetensors), the scores (graph_<case>.json) and the graph file create_graph_files writes
(<case>.json, Neuronpedia's format). Everything is small (a few hundred KiB in all).
"""

import json
import sys
from pathlib import Path

import circuit_tracer
import torch
from circuit_tracer import attribute
from circuit_tracer.graph import compute_graph_scores, prune_graph
from circuit_tracer.replacement_model.replacement_model_transformerlens import TransformerLensReplacementModel
from circuit_tracer.transcoder.activation_functions import JumpReLU
from circuit_tracer.transcoder.single_layer_transcoder import SingleLayerTranscoder, TranscoderSet
from circuit_tracer.utils.create_graph_files import create_graph_files
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformer_lens import HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

OUT = Path(__file__).resolve().parent.parent / "tests" / "golden" / "circuit_tracer"
WORDS = "the a of is in to and city capital country france paris spain madrid rome italy river king queen big".split()
CASES = {  # name: (prompt words, transcoder seed, skip connection, max_feature_nodes, attribution target)
    "relu_all": ("the capital of france is", 1, False, None, None),
    "skip_budget": ("the king of the city and the river is", 2, True, 40, None),
    "target": ("a big city of spain is", 1, False, None, "madrid"),
}
D_MODEL, N_LAYERS, N_HEADS, D_MLP, WIDTH = 32, 2, 4, 64, 96


def build_model(out: Path) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    vocab = {"<|endoftext|>": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")
    torch.manual_seed(0)                                  # a build script: the global RNG seeds the HF init
    config = GPT2Config(vocab_size=len(vocab), n_positions=32, n_embd=D_MODEL, n_layer=N_LAYERS, n_head=N_HEADS,
                        n_inner=D_MLP, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
        model.transformer.wte.weight.mul_(10)             # residual norms well above the biases
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return model, fast


def build_transcoders(seed: int, skip: bool) -> TranscoderSet:
    g = torch.Generator().manual_seed(seed)
    layers = {}
    for layer in range(N_LAYERS):
        threshold = 2.4 + 0.4 * torch.rand(WIDTH, generator=g)
        tc = SingleLayerTranscoder(D_MODEL, WIDTH, JumpReLU(threshold, 0.1), layer, skip_connection=skip,
                                   device=torch.device("cpu"), dtype=torch.float32)
        with torch.no_grad():
            tc.W_enc.copy_(torch.randn(WIDTH, D_MODEL, generator=g) / D_MODEL ** 0.5 * 2)
            tc.W_dec.copy_(torch.randn(WIDTH, D_MODEL, generator=g) / WIDTH ** 0.5)
            tc.b_enc.copy_(0.1 * torch.randn(WIDTH, generator=g))
            tc.b_dec.copy_(0.05 * torch.randn(D_MODEL, generator=g))
            if skip:
                tc.W_skip.copy_(0.1 * torch.randn(D_MODEL, D_MODEL, generator=g) / D_MODEL ** 0.5)
        layers[layer] = tc
    return TranscoderSet(layers, feature_input_hook="mlp.hook_in", feature_output_hook="mlp.hook_out",
                         scan=f"golden-seed{seed}")


def tl_model(hf: GPT2LMHeadModel, model_dir: Path, tcs: TranscoderSet) -> TransformerLensReplacementModel:
    cfg = HookedTransformerConfig(n_layers=N_LAYERS, d_model=D_MODEL, d_head=D_MODEL // N_HEADS, n_heads=N_HEADS,
                                  d_mlp=D_MLP, d_vocab=hf.config.vocab_size, n_ctx=32, act_fn="gelu_new",
                                  normalization_type="LN", eps=1e-5, positional_embedding_type="standard",
                                  original_architecture="GPT2LMHeadModel", tokenizer_name=str(model_dir),
                                  default_prepend_bos=False, device="cpu")
    model = TransformerLensReplacementModel(cfg)
    missing, unexpected = model.load_state_dict(convert_gpt2_weights(hf, cfg), strict=False)
    assert not unexpected and all("IGNORE" in k or "mask" in k or k == "unembed.b_U" for k in missing), (missing, unexpected)
    torch.nn.init.zeros_(model.unembed.b_U)                 # GPT-2 has no unembedding bias
    model._configure_replacement_model(tcs)
    return model


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    model_dir = OUT / "model"
    hf, tok = build_model(model_dir)
    index = {"circuit_tracer": getattr(circuit_tracer, "__version__", "0.5"), "cases": {}}
    for name, (prompt, seed, skip, budget, target) in CASES.items():
        tcs = build_transcoders(seed, skip)
        tc_dir = OUT / f"transcoders_seed{seed}{'_skip' if skip else ''}"
        tcs.to_safetensors(str(tc_dir))
        (tc_dir / "config.yaml").write_text("feature_input_hook: mlp.hook_in\nfeature_output_hook: mlp.hook_out\n",
                                            encoding="utf-8")
        model = tl_model(hf, model_dir, tcs)
        ids = torch.tensor([0] + tok(prompt, add_special_tokens=False).input_ids)
        targets = None if target is None else torch.tensor([tok.convert_tokens_to_ids(target)])
        graph = attribute(ids, model, attribution_targets=targets, max_n_logits=5, desired_logit_prob=0.9,
                          batch_size=16, max_feature_nodes=budget)
        node_mask, edge_mask, cumulative = prune_graph(graph, 0.8, 0.98)
        replacement, completeness = compute_graph_scores(graph)
        save_file({"adjacency": graph.adjacency_matrix.float().contiguous(),
                   "active_features": graph.active_features.long().contiguous(),
                   "activation_values": graph.activation_values.float().contiguous(),
                   "selected_features": graph.selected_features.long().contiguous(),
                   "input_tokens": ids, "logit_ids": graph.logit_token_ids.long(),
                   "logit_probabilities": graph.logit_probabilities.float().contiguous(),
                   "node_mask": node_mask, "edge_mask": edge_mask, "cumulative": cumulative.float()},
                  str(OUT / f"graph_{name}.safetensors"))
        create_graph_files(graph, slug=name, output_path=str(OUT), scan=f"golden-seed{seed}")
        index["cases"][name] = {"prompt": prompt, "transcoders": tc_dir.name, "max_feature_nodes": budget,
                                "target": target, "replacement_score": replacement,
                                "completeness_score": completeness, "max_n_logits": 5, "desired_logit_prob": 0.9}
    (OUT / "graph-metadata.json").unlink(missing_ok=True)   # create_graph_files' index of local graphs
    (OUT / "index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(CASES)} golden graphs to {OUT.relative_to(OUT.parents[2])}", file=sys.stderr)


if __name__ == "__main__":
    main()
