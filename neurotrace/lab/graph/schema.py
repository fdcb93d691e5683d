"""graph request and result: the attribution graph of one prompt over per-layer transcoders."""

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.graph.cost import graph_estimate
from neurotrace.lab.jobs import Estimate
from neurotrace.lab.results import RunResult

RESULTS_FILE = "graph_results.json"
GRAPH_FILE = "graph/graph.json"


class TranscoderFolder(BaseModel):
    """Per-layer transcoders from a folder: circuit-tracer's layout (layer_{L}.safetensors, optional
    config.yaml) or SAELens / Gemma Scope folders (cfg.json + sae_weights.safetensors per layer)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["folder"] = "folder"
    path: str = Field(min_length=1, description="Folder under an allowed input directory (the runs directory or "
                      "inputs/ beside it); safetensors only.")


class RandomTranscoders(BaseModel):
    """Seeded random transcoders (JumpReLU), for timing and as a control: a graph over them explains nothing
    about the model, only how the method behaves."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["random"] = "random"
    width_multiple: int = Field(8, ge=1, le=64, description="Features per layer = width_multiple x d_model.")
    l0: int = Field(64, ge=1, le=4096, description="Active features per layer and position: each layer's "
                    "JumpReLU threshold is set on the prompt's own MLP inputs so that about this many fire.")
    seed: int = Field(0, ge=0, description="Seed of the weights.")


class TranscoderDictionaries(BaseModel):
    """One dictionary reference per layer (load_dictionary: fit_sae run, SAELens / Gemma Scope 2 folder or
    release id), each a transcoder reading blocks.{L}.ln2.hook_normalized and writing blocks.{L}.hook_mlp_out."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["dictionary"] = "dictionary"
    refs: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(min_length=1, max_length=512, description="One per layer, any order. "
                                      "Each a fit_sae run_id, a SAELens folder under the input directories or a "
                                      "release/id; the layer is read from its site.")


TranscoderSource = Annotated[TranscoderFolder | RandomTranscoders | TranscoderDictionaries,
                             Field(discriminator="kind")]


class GraphRequest(BaseModel):
    """Attribution graph of a prompt (circuit-tracer's method) with checks by intervention."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: ClassVar[str] = "graph"
    model: str = Field(min_length=1, description="Causal LM. Embedded name, catalog name, hub id or local dir.")
    prompt: str = Field(min_length=1, max_length=2000, description="Explained at its last token. A special token is "
                        "put first when the tokenizer adds none (its position carries no features, as in "
                        "circuit-tracer).")
    transcoders: TranscoderSource = Field(description="One per layer. {'kind': 'folder', 'path': "
                                          "...} (circuit-tracer or SAELens layout), {'kind': 'dictionary', "
                                          "'refs': [...]} or {'kind': 'random', ...}.")
    target: str | None = Field(None, description="Answer word. Its first token after a space; without it the "
                               "logit nodes are the likeliest tokens until their probabilities reach 0.95 (at most "
                               "10), circuit-tracer's defaults.")
    max_feature_nodes: int | None = Field(1024, ge=1, le=100_000, description="Feature rows. Most influential "
                                          "first; None: every active feature. One backward pass per batch_size "
                                          "rows (circuit-tracer's queue).")
    batch_size: int = Field(32, ge=1, le=512, description="Rows per backward.")
    node_threshold: float = Field(0.8, ge=0, le=1, description="Node influence kept.")
    edge_threshold: float = Field(0.98, ge=0, le=1, description="Edge influence kept.")
    check_top: int = Field(8, ge=0, le=64, description="Top features checked. The graph's predicted "
                           "target-logit change is compared with the model's, and on as many random features.")
    steer_factor: float | None = Field(None, ge=-20, le=20, description="Steer x this (default: ablate). Multiplies the "
                                       "feature's activation instead of removing its output.")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.")

    def cost(self, lab: Any) -> Estimate:
        """The whole job's backward rows and peak bytes (:mod:`neurotrace.lab.graph.cost`)."""
        return graph_estimate(self, lab)


class Node(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node_id: str = Field(description="circuit-tracer id: '{layer}_{feature}_{pos}' feature, '0_{layer}_{pos}' "
                         "error, 'E_{token}_{pos}' embedding, '{n_layers+1}_{token}_{pos}' logit.")
    kind: Literal["feature", "error", "embedding", "logit"]
    layer: int | None = None
    pos: int
    feature: int | None = None
    label: str = Field(description="'L3/F120@5' (feature 120 of layer 3 at position 5), 'err L3@5', "
                       "'tok \"Paris\"@4', 'logit \"Paris\"'.")
    name: str | None = Field(None, description="The feature's name, where one is known.")
    influence: float = Field(description="Influence on the logits (circuit-tracer's, probability-weighted).")
    activation: float | None = None


class Path_(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nodes: list[str] = Field(description="Node labels from an input token to the target logit.")
    score: float = Field(description="Product of each step's share of its target's input (|edge| normalised).")
    effect: float = Field(description="The path's linear effect on the target logit: the first edge times, "
                          "per later edge, its weight per unit of its source feature's activation (logits).")


class InterventionCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node: str = Field(description="Feature label.")
    group: Literal["top", "random"]
    predicted: float = Field(description="Target-logit change the graph predicts (linear, through features).")
    actual: float = Field(description="Target-logit change of the real model under the intervention.")


class GraphChecks(BaseModel):
    model_config = ConfigDict(extra="forbid")
    intervention: str
    rows: list[InterventionCheck]
    correlation_top: float | None = Field(description="Pearson r of predicted vs actual over the top features.")
    correlation_random: float | None = Field(description="The same over the random control features.")
    mean_abs_actual_top: float
    mean_abs_actual_random: float | None


class GraphResults(BaseModel):
    """graph_results.json: the graph's bookkeeping, kept nodes, paths, scores and checks."""

    model_config = ConfigDict(extra="forbid")
    model: str
    prompt: str
    prompt_tokens: list[str]
    transcoders: str = Field(description="Where the transcoders came from (and their sha256).")
    targets: list[str] = Field(description="The logit nodes' tokens, most likely first.")
    target_probabilities: list[float]
    target_logit: float = Field(description="The first target's logit minus the mean logit (what the logit "
                                "node's incoming direct effects sum to, with the constant).")
    direct_effect_sum: float = Field(description="Sum of every node's direct effect on the first target.")
    constant: float = Field(description="target_logit - direct_effect_sum: biases, position embeddings and the "
                            "first position's MLP outputs, which are not nodes.")
    n_active_features: int
    n_feature_nodes: int = Field(description="Feature rows computed (max_feature_nodes).")
    n_nodes_kept: int
    n_edges_kept: int
    replacement_score: float
    completeness_score: float
    kept_influence_share: float = Field(description="Share of the total influence on the logits held by the kept "
                                        "nodes.")
    kept_direct_share: float = Field(description="Share of the first target's direct effects (signed sum) whose "
                                     "sources the pruned graph keeps.")
    nodes: list[Node] = Field(description="Kept nodes, most influential first.")
    paths: list[Path_]
    checks: GraphChecks | None = None


class GraphResult(RunResult):
    model: str
    targets: list[str]
    replacement_score: float = Field(description="Share of token + error influence that flows from tokens "
                                     "through features (1: no error influence).")
    completeness_score: float
    kept_influence_share: float
    n_nodes_kept: int
    n_edges_kept: int
    top_nodes: list[Node]
    paths: list[Path_]
    checks: GraphChecks | None = None
