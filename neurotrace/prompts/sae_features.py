"""Prompt: find and test SAE features (capture -> fit_sae -> intervene)."""

from neurotrace.prompts._protocol import missing_tools_note, steps

TOOLS = ("capture", "fit_sae", "intervene", "plot")


def text(model: str, site: str) -> str:
    return steps(
        f"Find causal SAE features of {model} at {site}",
        "A sparse autoencoder (SAE) rewrites activations as a sparse sum of features that are often "
        "interpretable. Capture activations, fit an SAE on them, read its top-activating examples, then "
        "intervene on features to test which ones change the behaviour.",
        [
            f"Call `capture` on `{model}` at the hook site `{site}` (site names: hook_embed, "
            "blocks.{L}.hook_resid_pre|hook_resid_post|hook_attn_out|hook_mlp_out, blocks.{L}.mlp.hook_post) over "
            "a prompt set or a multi-step episode. Keep its `run_id` as CAPTURE. Read the tool's input schema "
            "for the exact fields.",
            "Call `fit_sae` on CAPTURE with a fixed seed (ReLU + L1 or TopK). Check its metrics: reconstruction "
            "MSE, fraction of variance unexplained, L0, dead-feature fraction, and the downstream change when "
            "reconstructions are spliced back. Keep its `run_id` as SAE.",
            "Read the top-activating examples table of SAE to name a few features.",
            "Call `intervene` with SAE: ablate, clamp or patch the candidate features and compare baseline with "
            "intervened outcomes (target probabilities, logit differences, generated text).",
            "Re-run with the same seed to confirm the report is reproduced exactly.",
        ],
        [
            "Trust the SAE only if it reconstructs well (low unexplained variance, small downstream change) "
            "with few dead features; otherwise refit (more data, other sparsity).",
            "A feature is causal for the behaviour if ablating it changes the outcome more than ablating random "
            "features of similar activation; report the ranked effects from report.json.",
            "Clamping a feature to its own value must change nothing - a quick sanity check of the loop.",
        ])


def register(server) -> None:
    @server.prompt(name="sae_features", title="Find causal SAE features",
                   description="Protocol: capture activations, fit a sparse autoencoder, intervene on features.")
    async def sae_features(model: str = "fact-gpt2", site: str = "blocks.3.hook_resid_post") -> str:
        return text(model, site) + await missing_tools_note(server, TOOLS)
