"""Bounding a job before it starts: its cost estimate (:mod:`.estimates`: memory, forward rows, seconds), the
memory and row budget it is checked against (:mod:`.budget`), and the server-wide admission line that bounds how
many run at once (:mod:`.admission`)."""

from neurotrace.lab.jobs.admission import Admission, Ticket
from neurotrace.lab.jobs.budget import check_request, job_budget
from neurotrace.lab.jobs.estimates import (
    BYTES,
    GUESS,
    PACK_FACTS_GUESS,
    ROWS_PER_BATCH,
    WIDTH_GUESS,
    Costed,
    Dims,
    Estimate,
    dims_of,
    forward_bytes,
    job_estimate,
    known_dims,
    machine_flops,
    positions,
    prompt_texts,
    token_flops,
    weight_bytes,
)

__all__ = ["BYTES", "GUESS", "PACK_FACTS_GUESS", "ROWS_PER_BATCH", "WIDTH_GUESS", "Admission", "Costed", "Dims",
           "Estimate", "Ticket", "check_request", "dims_of", "forward_bytes", "job_budget", "job_estimate",
           "known_dims", "machine_flops", "positions", "prompt_texts", "token_flops", "weight_bytes"]
