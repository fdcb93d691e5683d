"""A prompt's arguments as given: refuse unknown names and half-given examples, and name the defaults used.

Every protocol prompt's arguments are optional: without them it renders its built-in example. Some
arguments only make sense together (``prompt``, ``target`` and ``corrupt`` describe one example), so a
prompt module lists them in ``TOGETHER``; giving some of a group without the rest would mix the caller's
prompt with the built-in example's answer, and is refused, naming the missing ones. An unknown argument is
refused naming the accepted ones; a required one that is missing is refused by name; and a prompt rendered
with arguments left out says which defaults it used.
"""

import inspect
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType


def _names(items: Sequence[str]) -> str:
    return ", ".join(items)


def argument_problem(name: str, given: Mapping[str, str], accepted: Sequence[str], required: Sequence[str],
                     module: ModuleType | None) -> str | None:
    """What is wrong with ``given`` for prompt ``name`` (``'field: problem. Fix: ...'``), or None."""
    unknown = [a for a in given if a not in accepted]
    if unknown:
        return (f"arguments: unknown argument(s) {_names(unknown)} for prompt {name}. "
                f"Fix: use {_names(accepted) or 'no arguments'}")
    missing = [a for a in required if a not in given]
    if missing:
        return f"arguments: prompt {name} needs {_names(missing)}. Fix: pass {_names(missing)}"
    for group in getattr(module, "TOGETHER", ()):
        have = [a for a in group if a in given]
        lack = [a for a in group if a not in given]
        if have and lack:
            return (f"arguments: {_names(lack)} missing for prompt {name}: {_names(group)} describe one example "
                    f"together, and {_names(have)} {'was' if len(have) == 1 else 'were'} given. Fix: pass "
                    f"{_names(lack)} too, or none of {_names(group)} for the built-in example")
    return None


def defaults_note(fn: Callable[..., object], given: Mapping[str, str]) -> str:
    """A line naming the arguments left out and the defaults used ('' when every argument was given)."""
    used = [f"{p.name}={p.default!r}" for p in inspect.signature(fn).parameters.values()
            if p.name not in given and p.default is not inspect.Parameter.empty]
    return f"> Arguments not given, defaults used: {', '.join(used)}.\n\n" if used else ""
