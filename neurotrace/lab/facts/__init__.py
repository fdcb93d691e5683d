"""Facts: the shared fact record, the built-in packs, importers, tokenizer checks, and generate_facts.

Other families use the record (:class:`Fact`), the packs (:func:`load_pack`, :func:`load_facts` for an
embedded model's ``facts.json``) and saved datasets (:func:`load_factset`).
"""

from neurotrace.lab.experiment import Experiment
from neurotrace.lab.facts.fact import Fact, PromptVariant
from neurotrace.lab.facts.generate import (
    FactSet,
    GenerateFactsRequest,
    GenerateFactsResult,
    load_factset,
    run_generate_facts,
)
from neurotrace.lab.facts.packs import list_packs, load_all_packs, load_facts, load_pack

__all__ = ["GENERATE_FACTS", "Fact", "FactSet", "GenerateFactsRequest", "GenerateFactsResult", "PromptVariant", "list_packs",
           "load_all_packs", "load_facts", "load_factset", "load_pack", "run_generate_facts"]

GENERATE_FACTS = Experiment(run_generate_facts, GenerateFactsRequest, GenerateFactsResult, no_figures="its runs hold a fact dataset (dataset.json), no figure")
