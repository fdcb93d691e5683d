"""Dictionaries people already have: Gemma Scope 2's layout, and SAELens' pretrained registry.

**Gemma Scope 2** (``google/gemma-scope-2-270m-pt`` and its siblings) stores each dictionary as a folder
``<kind>/layer_<L>_width_<W>_l0_<size>[_affine]/`` holding ``params.safetensors`` (``w_enc`` (d_in, d_sae),
``w_dec`` (d_sae, d_out), ``b_enc``, ``b_dec``, ``threshold``; transcoders with ``_affine`` add
``affine_skip_connection`` (d_in, d_out)) and, in most folders, ``config.json`` (``architecture:
"jump_relu"``, ``hf_hook_point_in``/``_out``, ``affine_connection``). All are JumpReLU with
``apply_b_dec_to_input = False``. The folder's kind gives the sites, as SAELens' ``gemma_3`` loader reads
them: ``resid_post`` -> ``blocks.L.hook_resid_post``; ``mlp_out`` -> ``blocks.L.hook_mlp_out`` (the
post-feed-forward norm's output); ``attn_out`` -> ``blocks.L.attn.hook_z`` (the input of ``o_proj``,
all heads concatenated); ``transcoder`` -> from ``blocks.L.ln2.hook_normalized`` (the
pre-feed-forward norm's output, the MLP's input) to ``blocks.L.hook_mlp_out``.

**Release ids** (``release/sae_id`` or ``release:sae_id``) resolve through SAELens' registry, its
``pretrained_saes.yaml`` (from an installed ``sae_lens`` when there is one, else the copy in SAELens'
repository), and are downloaded from the HuggingFace Hub: ``cfg.json`` + ``sae_weights.safetensors``
for SAELens-native releases, ``params.safetensors`` (+ ``config.json``) for ``conversion_func:
gemma_3``. This needs the network; offline it fails with a typed error saying so.
"""

import json
import re
from pathlib import Path
from typing import Any

from neurotrace.lab.errors import InputError, NotFound
from neurotrace.lab.sae.dictionary import Dictionary, DictionaryConfig, file_sha256, read_safetensors
from neurotrace.lab.sae.saelens import check_tensors

GEMMA_PARAMS, GEMMA_CONFIG = "params.safetensors", "config.json"
REGISTRY_URL = "https://raw.githubusercontent.com/decoderesearch/SAELens/main/sae_lens/pretrained_saes.yaml"
_KINDS = ("transcoder", "clt", "resid_post", "attn_out", "mlp_out")


def gemma_scope_sites(folder: str) -> tuple[str, str]:
    """(site, out_site) of a Gemma Scope 2 folder name such as ``resid_post/layer_6_width_16k_l0_small``."""
    m = re.search(r"layer_(\d+)", folder)
    kind = next((k for k in _KINDS if k in folder), None)
    if m is None or kind is None:
        raise InputError("dictionary", "a Gemma Scope 2 folder is named <kind>/layer_<L>_width_..., kind one of "
                         f"{list(_KINDS[1:])} or transcoder", fix="keep the folder names of the release")
    layer = m.group(1)
    if kind in ("transcoder", "clt"):
        return f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"
    site = {"resid_post": "hook_resid_post", "attn_out": "attn.hook_z", "mlp_out": "hook_mlp_out"}[kind]
    return f"blocks.{layer}.{site}", f"blocks.{layer}.{site}"


def from_gemma_scope(params: Path, config: Path | None, folder_name: str, field: str, source: str,
                     kind: str) -> Dictionary:
    """A dictionary from a Gemma Scope 2 folder's params.safetensors (+ config.json when present)."""
    raw_cfg: dict[str, Any] = {}
    if config is not None:
        try:
            raw_cfg = json.loads(config.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(field, "config.json is not valid UTF-8 JSON", fix="keep the release's config.json") from exc
        if raw_cfg.get("architecture", "jump_relu") != "jump_relu":
            raise InputError(field, f"Gemma Scope architecture {raw_cfg.get('architecture')!r} is not jump_relu",
                             fix="use a Gemma Scope 2 JumpReLU dictionary")
    raw = read_safetensors(params, field)
    missing = [k for k in ("w_enc", "w_dec", "b_enc", "b_dec", "threshold") if k not in raw]
    if missing:
        raise InputError(field, f"params.safetensors lacks {missing}", fix="pass the release's params.safetensors")
    site, out_site = gemma_scope_sites(folder_name)
    transcoder = site != out_site
    d_in, d_sae = (int(n) for n in raw["w_enc"].shape)
    d_out = int(raw["w_dec"].shape[-1])
    skip = transcoder and "affine_skip_connection" in raw
    arch = ("jumprelu_skip_transcoder" if skip else "jumprelu_transcoder") if transcoder else "jumprelu"
    c = {"architecture": arch, "activation": "jumprelu", "transcoder": transcoder, "skip": skip, "d_in": d_in,
         "d_sae": d_sae, "d_out": d_out, "k": None}
    tensors = {"W_enc": raw["w_enc"], "W_dec": raw["w_dec"], "b_enc": raw["b_enc"], "b_dec": raw["b_dec"],
               "threshold": raw["threshold"]}
    if skip:
        tensors["W_skip"] = raw["affine_skip_connection"].T.contiguous()
    model = str(raw_cfg.get("model_name") or "gemma-3-270m")
    cfg = DictionaryConfig(**c, site=site, out_site=out_site, hook_name=str(raw_cfg.get("hf_hook_point_in", site)),
                           hook_name_out=str(raw_cfg.get("hf_hook_point_out", out_site)), apply_b_dec_to_input=False,
                           model=model, sha256=file_sha256(params), source=source, kind=kind)
    return Dictionary(cfg, check_tensors(c, tensors, field)).eval()


# -- SAELens' registry (online) -----------------------------------------------------------------------
def _registry() -> dict[str, Any]:
    """SAELens' pretrained_saes.yaml as a dict: the installed sae_lens copy, else the repository's."""
    import yaml

    try:
        from importlib.resources import files

        text = files("sae_lens").joinpath("pretrained_saes.yaml").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        import urllib.request

        with urllib.request.urlopen(REGISTRY_URL, timeout=30) as fh:  # noqa: S310 (a fixed https URL)
            text = fh.read().decode("utf-8")
    return yaml.safe_load(text)


def split_release(ref: str) -> tuple[str, str]:
    """('release', 'sae_id') of 'release/sae_id' or 'release:sae_id' (ids may contain '/')."""
    if ":" in ref:
        release, sae_id = ref.split(":", 1)
    elif "/" in ref:
        release, sae_id = ref.split("/", 1)
    else:
        raise InputError("dictionary", f"{ref!r} is neither a fit_sae run id, a folder under the input directories, "
                         "nor 'release/sae_id'", fix="pass a run id, a folder path, or a SAELens release and id")
    return release.strip(), sae_id.strip()


def load_release(ref: str, field: str) -> Dictionary:
    """Download and load a SAELens release's dictionary (needs the network)."""
    release, sae_id = split_release(ref)
    try:
        registry = _registry()
    except OSError as exc:
        raise NotFound(field, f"{ref!r} looks like a SAELens release id, but SAELens' registry could not be read "
                       "(offline?)", fix="download the dictionary folder and pass its path under the input "
                       "directories, or retry online") from exc
    entry = registry.get(release)
    if entry is None:
        raise NotFound(field, f"no SAELens release {release!r}", fix="use a release listed in SAELens' "
                       "pretrained_saes.yaml")
    path = next((s["path"] for s in entry.get("saes", []) if s.get("id") == sae_id), None)
    if path is None:
        raise NotFound(field, f"release {release!r} has no sae id {sae_id!r}",
                       fix="use an id the release lists (e.g. " + ", ".join(
                           str(s.get("id")) for s in entry.get("saes", [])[:3]) + ")")
    conversion = entry.get("conversion_func")
    if conversion not in (None, "gemma_3"):
        raise InputError(field, f"release {release!r} needs SAELens' {conversion!r} converter, not supported here",
                         fix="load it in SAELens, save_model it, and pass that folder")
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        repo = entry["repo_id"]
        if conversion == "gemma_3":
            params = Path(hf_hub_download(repo, f"{path}/{GEMMA_PARAMS}"))
            try:
                config: Path | None = Path(hf_hub_download(repo, f"{path}/{GEMMA_CONFIG}"))
            except EntryNotFoundError:
                config = None
            return from_gemma_scope(params, config, path, field, source=ref, kind="release")
        from neurotrace.lab.sae.dictionary import from_folder_files

        cfg = Path(hf_hub_download(repo, f"{path}/cfg.json"))
        weights = Path(hf_hub_download(repo, f"{path}/sae_weights.safetensors"))
        return from_folder_files(cfg, weights, field, source=ref, kind="release")
    except (OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise NotFound(field, f"could not download {ref!r} from the Hub (offline, or HF_HUB_OFFLINE set)",
                       fix="download the folder and pass its path under the input directories") from exc
