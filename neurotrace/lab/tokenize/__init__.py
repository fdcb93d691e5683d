"""tokenize: how texts tokenize in one or more models, from their tokenizers alone (no weights)."""

from neurotrace.lab.experiment import Experiment
from neurotrace.lab.tokenize.run import run_tokenize
from neurotrace.lab.tokenize.schema import TokenizeRequest, TokenizeResult, TokenRow

__all__ = ["TOKENIZE", "TokenRow", "TokenizeRequest", "TokenizeResult", "run_tokenize"]

TOKENIZE = Experiment(run_tokenize, TokenizeRequest, TokenizeResult, detachable=False,
                      no_figures="a token table is the whole answer")
