"""Tensor shapes in signatures (jaxtyping) are checked under pytest: pyproject's addopts instrument the
core tensor modules with beartype, so a call with a wrongly shaped tensor fails at the call."""

import pytest
import torch
from jaxtyping import TypeCheckError

from neurotrace.lab.clamping.generation import Generated, Sampler
from neurotrace.lab.tracing.grids.fast_decoder import Step
from neurotrace.lab.tracing.grids.rowplan import put
from neurotrace.lab.tracing.noise import noise_hook


def test_a_wrongly_shaped_tensor_is_refused_at_the_call():
    noise_hook(torch.zeros(2, 1, 4), (0, 1))          # (row, n_subject, d_model): accepted
    with pytest.raises(TypeCheckError):
        noise_hook(torch.zeros(2, 4), (0, 1))          # a missing axis


def test_a_fast_path_restoration_wider_than_the_states_is_refused():
    states, at = torch.zeros(3, 2, 4), (torch.tensor([0]), torch.tensor([1]))
    put(states, (*at, torch.ones(1, 4)))                # clean values (n, d_model): accepted
    assert states[0, 1].tolist() == [1.0] * 4
    with pytest.raises(TypeCheckError):
        put(states, (*at, torch.ones(1, 5)))            # d_model 5 into states of width 4


def test_a_fast_decoder_step_whose_samples_do_not_match_its_inputs_is_refused():
    ids = torch.tensor([0, 1])
    Step(inputs=ids, enter=ids[:1], sample=ids, restore={}, resid=None)
    with pytest.raises(TypeCheckError):
        Step(inputs=ids, enter=ids[:1], sample=ids[:1], restore={}, resid=None)   # one sample for two states


def test_generation_refuses_logits_without_a_row_axis_and_outputs_of_mismatched_rows():
    assert Sampler().choose(torch.tensor([[0.0, 2.0, 1.0]])).tolist() == [1]   # (row, vocab): accepted
    with pytest.raises(TypeCheckError):
        Sampler().choose(torch.tensor([0.0, 2.0, 1.0]))
    with pytest.raises(TypeCheckError):
        Generated(tokens=torch.zeros(2, 5, dtype=torch.long), lengths=torch.zeros(3, dtype=torch.long))


def test_a_step_by_step_continuation_holds_one_vocab_vector_per_forward():
    from neurotrace.lab.model.runtime.stepwise import Continuation

    Continuation(tokens=[1], logits=[torch.zeros(7)], forwards=1)
    with pytest.raises(TypeCheckError):
        Continuation(tokens=[1], logits=[torch.zeros(1, 7)], forwards=1)     # a (pos, vocab) block, not (vocab,)
