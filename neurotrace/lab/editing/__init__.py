"""edit: rewrite facts in a model's MLP weights (ROME, MEMIT), measured as CounterFact does."""

from neurotrace.lab.editing import figures
from neurotrace.lab.editing.run import run_edit
from neurotrace.lab.editing.schema import EditRequest, EditResult, EditResults
from neurotrace.lab.experiment import Experiment, Figures

__all__ = ["EDIT", "EditRequest", "EditResult", "run_edit"]

EDIT = Experiment(run_edit, EditRequest, EditResult,
                  figures=Figures(figures.FIGURES, figures.RESULTS_FILE, EditResults, applies=figures.APPLIES))
