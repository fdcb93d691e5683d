"""Prompt: find and test SAE features (capture -> fit_sae -> features -> intervene)."""

from neurotrace.prompts._protocol import missing_tools_note, steps

TOOLS = ("capture", "fit_sae", "features", "intervene", "plot")


def text(model: str, site: str) -> str:
    return steps(
        f"Find causal SAE features of {model} at {site}",
        "A sparse autoencoder (SAE) rewrites activations as a sparse sum of features that are often "
        "interpretable. Capture activations, fit an SAE on them, read its top-activating examples, then "
        "intervene on features to test which ones change the behaviour.",
        [
            f"Call `capture` on `{model}` at the hook site `{site}` (site names: hook_embed, "
            "blocks.{L}.hook_resid_pre|hook_resid_post|hook_attn_out|hook_mlp_out, blocks.{L}.mlp.hook_post) over "
            "a corpus (`\"corpus\": \"python-docs\"`, the built-in one, or your own .txt/.jsonl file; "
            "`max_tokens` 100000 or more, `skip_bos`: true), or a prompt set. Keep its `run_id` as CAPTURE. "
            "Read the tool's input schema for the exact fields.",
            "Call `fit_sae` with {\"request\": {\"capture_run_id\": \"CAPTURE\", \"architecture\": \"topk\", "
            "\"k\": 8, \"seed\": 0}}. Read its `verdict` (usable / marginal / unusable) and metrics (SAELens "
            "names, on held-out rows): explained_variance, l0, dead_fraction, ce_loss_score. Keep its `run_id` "
            "as SAE.",
            "Call `features` with {\"request\": {\"dictionary\": \"SAE\", \"capture_run_id\": \"CAPTURE\"}} "
            "and read the listing and the feature pages (top contexts, quantile samples, promoted and "
            "suppressed tokens); add `\"prompt\"` to see which features your prompt fires, or `\"search\"` to "
            "find features by the text that activates them. Name a few features from their pages.",
            "Call `intervene` with {\"request\": {\"fit_sae_run_id\": \"SAE\", \"prompts\": [{\"prompt\": "
            "\"...\", \"target\": \"...\"}], \"policies\": [{\"kind\": \"ablate_features\", \"features\": "
            "[3]}]}} with the feature ids you named (3 is a placeholder; first `\"policies\": []` ranks every "
            "feature by single-feature ablation and lists the top ones). Read its `verdict` (causal / weak / not above "
            "control / no measurable effect / destructive, against features of matched activation mass, with "
            "random directions as one more control), `direction`, `effect_size`, `damage` and any "
            "`sae_caution`, and compare baseline with intervened outcomes.",
            "Re-run with the same seed to confirm the report is reproduced exactly.",
        ],
        [
            "Trust the SAE only if fit_sae says usable; an unusable SAE (many dead features, large spliced loss) "
            "must be refitted (more data, skip position 0, other k) before any feature is interpreted.",
            "A feature is causal for the behaviour only if intervene's verdict is causal: its effect beats "
            "features of matched activation mass and is at least moderate for the task; `destructive` means the "
            "edit broke neutral text, so the effect says nothing about the feature. Report the ranked effects "
            "(nats of log p(target)) from report.json.",
            "Clamping a feature to its own value must change nothing - a quick sanity check of the loop.",
        ])


def register(server) -> None:
    @server.prompt(name="sae_features", title="Find causal SAE features",
                   description="Protocol: capture a corpus, fit a sparse autoencoder, read feature pages, intervene.")
    async def sae_features(model: str = "fact-gpt2", site: str = "blocks.3.hook_resid_post") -> str:
        return text(model, site) + await missing_tools_note(server, TOOLS)
