"""attribute: direct logit attribution and attribution patching."""

from neurotrace.lab.attribution.run import run_attribute
from neurotrace.lab.attribution.schema import AttributeRequest, AttributeResult

__all__ = ["AttributeRequest", "AttributeResult", "run_attribute"]
