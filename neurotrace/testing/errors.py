"""Catching lab errors in tests, whether raised directly or from inside a pydantic validator.

:class:`~neurotrace.lab.errors.LabError` is a ``ValueError``, so one raised while a request model
validates arrives wrapped in a ``ValidationError``; :func:`raises_lab_error` unwraps it::

    with raises_lab_error(InputError) as err:
        TraceRequest(models=["fact-gpt2"])
    assert err.value.field == "facts"
"""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pydantic import ValidationError

from neurotrace.lab.errors import LabError, lab_error_in


@dataclass
class Caught:
    value: LabError | None = None


@contextmanager
def raises_lab_error(kind: type[LabError] = LabError, match: str | None = None) -> Iterator[Caught]:
    """Assert that the block raises a ``kind`` error (directly or via validation) whose text matches the
    regex ``match``; expose it as ``.value``."""
    caught = Caught()
    try:
        yield caught
    except ValidationError as exc:
        cause = lab_error_in(exc)
        if not isinstance(cause, kind):
            raise
        caught.value = cause
    except LabError as exc:
        if not isinstance(exc, kind):
            raise
        caught.value = exc
    else:
        raise AssertionError(f"expected {kind.__name__}, nothing was raised")
    if match is not None and not re.search(match, str(caught.value)):
        raise AssertionError(f"{kind.__name__} {str(caught.value)!r} does not match {match!r}")
