"""One small, valid call of every tool on the embedded fact-gpt2, in an order where each call's run ids come
from earlier calls (``{gen}`` etc. name the run of the step with that key). ``explain`` is left out: it needs
the client's LLM (sampling), which the Inspector's CLI does not offer; it gets its typed refusal."""

import json

P = "The capital of France is"
PAIRS = [["The capital of France is", "The river of France is"], ["The capital of Spain is", "The river of Spain is"]]

# (key, tool, arguments); strings "{key}" inside are replaced by that step's run id
PLAN: list[tuple[str, str, dict]] = [
    ("list", "list_models", {}),
    ("load", "load_model", {"request": {"model": "fact-gpt2"}}),
    ("gen", "generate_facts", {"request": {"source": {"kind": "pack", "domains": ["geography"]}, "models": []}}),
    ("trace", "trace", {"request": {"models": ["fact-gpt2"], "dataset_run_id": "{gen}", "max_facts": 1,
                                    "components": ["resid"], "corruption": {"kind": "noise", "samples": 2}}}),
    ("trace2", "trace", {"request": {"models": ["fact-gpt2-cyber"], "dataset_run_id": "{gen}", "max_facts": 1,
                                     "components": ["resid"], "corruption": {"kind": "noise", "samples": 2}}}),
    ("compare", "compare", {"request": {"run_ids": ["{trace}", "{trace2}"]}}),
    ("plot", "plot", {"request": {"run_id": "{trace}", "kind": "layer_curve"}}),
    ("lens", "logit_lens", {"request": {"model": "fact-gpt2", "prompt": P, "target": "Paris"}}),
    ("attr", "attribute", {"request": {"model": "fact-gpt2", "prompt": P, "target": "Paris"}}),
    ("attn", "attention", {"request": {"model": "fact-gpt2", "prompt": P, "heads": ["1:0"]}}),
    ("patch", "patch", {"request": {"model": "fact-gpt2", "clean": P, "corrupt": "The capital of Japan is",
                                    "components": ["resid_pre"]}}),
    ("neurons", "find_neurons", {"request": {"model": "fact-gpt2", "prompts": [P, "The capital of Spain is"],
                                             "control_prompts": ["The river of France is", "The river of Spain is"]}}),
    ("probe", "probe", {"request": {"model": "fact-gpt2", "prompts": [p for pair in PAIRS for p in pair],
                                    "labels": ["capital", "river", "capital", "river"], "k_folds": 2}}),
    ("steer", "steer", {"request": {"model": "fact-gpt2", "direction_from": {"pairs": PAIRS, "layer": 1},
                                    "prompts": ["The capital of Italy is"], "targets": ["Rome"], "alphas": [0.5],
                                    "n_random": 1}}),
    ("clamp", "clamp_sweep", {"request": {"model": "fact-gpt2", "neurons": ["1:12"], "prompts": ["the the the"],
                                          "values": [0, 5], "max_new_tokens": 4, "controls": 1}}),
    ("capture", "capture", {"request": {"model": "fact-gpt2", "sites": ["blocks.1.hook_resid_post"],
                                        "prompts": [P, "The river of Spain is"]}}),
    ("sae", "fit_sae", {"request": {"capture_run_id": "{capture}", "architecture": "topk", "k": 2, "d_sae": 16,
                                    "n_steps": 20, "batch_size": 8}}),
    ("intervene", "intervene", {"request": {"fit_sae_run_id": "{sae}", "prompts": [{"prompt": P, "target": "Paris"}],
                                            "policies": [{"kind": "ablate_features", "features": [1]}],
                                            "controls": 1}}),
    ("features", "features", {"request": {"dictionary": "{sae}", "capture_run_id": "{capture}", "page_size": 3}}),
    ("graph", "graph", {"request": {"model": "fact-gpt2", "prompt": P, "target": "Paris",
                                    "transcoders": {"kind": "random", "seed": 1}, "max_feature_nodes": 16,
                                    "check_top": 1}}),
    ("edit", "edit", {"request": {"model": "fact-gpt2", "pack": "geography", "max_facts": 1, "layers": [1],
                                  "max_new_tokens": 0, "value": {"n_contexts": 1, "steps": 2},
                                  "covariance": {"tokens": 256}}}),
    ("diff", "diff", {"request": {"model": "fact-gpt2-cyber", "base": "fact-gpt2", "prompts": [P],
                                  "max_new_tokens": 2}}),
    ("tokenize", "tokenize", {"request": {"texts": [P], "models": ["fact-gpt2"]}}),
    ("bench", "benchmark", {"request": {"seeds": 2, "samples": 64, "parts": ["circuits"], "ig_steps": 8}}),
    ("status", "run_status", {"run_id": "{gen}"}),
    ("release", "release_model", {"model": "fact-gpt2"}),
]


def fill(args: dict, runs: dict[str, str]) -> dict:
    text = json.dumps(args)
    for key, run_id in runs.items():
        text = text.replace("{" + key + "}", run_id)
    return json.loads(text)
