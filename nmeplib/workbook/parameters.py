"""Notebook parameter names, checked against those the notebook declares.

papermill only warns about a parameter the notebook does not declare and runs on without it, so
``-p learning_rate 0.5`` on ``04_alexnet.ipynb`` would train at the default ``lr``. Here such a
name is a :class:`ConfigError` naming the close matches: inside the run, where each notebook's
config cell calls :func:`check_parameters` on papermill's injected cell, and before the library
starts papermill itself (``execute.run_notebook``, :func:`check_names`).
"""
from __future__ import annotations

import ast
import difflib
from typing import Any, Iterable, Mapping

from ..config import ConfigError

# The first line of the cell papermill injects after the ``parameters`` cell (tagged
# ``injected-parameters``); one ``name = value`` line per parameter follows.
INJECTED_HEADER = "# Parameters"
MAX_SUGGESTIONS = 3


def assigned_names(source: str) -> list[str]:
    """The names a cell assigns at top level, in order; [] when it is not plain Python."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return []
    names: list[str] = []
    for statement in body:
        if isinstance(statement, ast.Assign):
            names += [target.id for target in statement.targets if isinstance(target, ast.Name)]
        elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            names.append(statement.target.id)
    return list(dict.fromkeys(names))


def _words(name: str) -> list[str]:
    return [word for word in name.lower().split("_") if word]


def _short(name: str) -> str:
    """``learning_rate`` -> ``lr``: the initials of a name of several words, else the name."""
    words = _words(name)
    return "".join(word[0] for word in words) if len(words) > 1 else name.lower()


def close_names(name: str, declared: Iterable[str]) -> list[str]:
    """The declared names ``name`` may have meant: difflib's close matches (``ephocs``: ``epochs``),
    then abbreviations either way (``learning_rate``: ``lr``, ``bs``: ``batch_size``) and a word of
    a longer name (``root``: ``data_root``)."""
    declared = list(declared)
    short = _short(name)
    matches = difflib.get_close_matches(name, declared, n=MAX_SUGGESTIONS)
    matches += [d for d in declared if short in (d.lower(), _short(d)) or (len(_words(d)) > 1 and short in _words(d))]
    return list(dict.fromkeys(matches))[:MAX_SUGGESTIONS]


def did_you_mean(name: str, declared: Iterable[str]) -> str:
    """``'learning_rate' (did you mean 'lr'?)``: the name and its close matches, if any."""
    close = close_names(name, declared)
    return f"{name!r} (did you mean {' or '.join(map(repr, close))}?)" if close else repr(name)


def describe_unknown(unknown: Iterable[str], declared: Iterable[str]) -> str:
    """``unknown notebook parameter 'learning_rate' (did you mean 'lr'?)``, for one name or several."""
    declared = list(declared)
    named = [did_you_mean(name, declared) for name in unknown]
    return f"unknown notebook parameter{'' if len(named) == 1 else 's'} {', '.join(named)}"


def unknown_parameters_error(unknown: Iterable[str], declared: Iterable[str], notebook: str) -> ConfigError:
    """One line naming each unknown parameter with its close matches, then all that ``notebook`` takes."""
    declared = list(declared)
    return ConfigError(f"{describe_unknown(unknown, declared)}; {notebook} takes: {', '.join(declared)}")


def check_names(given: Iterable[str], declared: Iterable[str], notebook: str) -> None:
    """Raise :func:`unknown_parameters_error` for the names in ``given`` that ``notebook`` does not declare."""
    declared = list(declared)
    unknown = [name for name in given if name not in declared]
    if unknown:
        raise unknown_parameters_error(unknown, declared, notebook)


def check_parameters(namespace: Mapping[str, Any], notebook: str) -> None:
    """In a notebook run by papermill, refuse a parameter the ``parameters`` cell does not declare.

    Call it as ``wb.check_parameters(globals(), "04_alexnet.ipynb")`` in the cell right after the
    parameters. IPython keeps the cells run so far in the notebook's ``In``: when the one before
    this cell is papermill's injected cell, the one before that is the parameters cell, and every
    name the injected cell assigns must be one the parameters cell assigns. Anywhere else
    (JupyterLab, nbval, a cell run again, plain Python) there is nothing injected to check.
    """
    __tracebackhide__ = True   # IPython shows the notebook's cell and the error, not this function
    history = namespace.get("In")
    if not isinstance(history, list) or len(history) < 3:
        return
    parameters, injected = history[-3], history[-2]
    if not (isinstance(injected, str) and isinstance(parameters, str)
            and injected.splitlines()[:1] == [INJECTED_HEADER]):
        return
    declared = assigned_names(parameters)
    unknown = [name for name in assigned_names(injected) if name not in declared]
    if declared and unknown:
        raise unknown_parameters_error(unknown, declared, notebook)


# The sections of 05_sweeps.ipynb, in order; its ``sweeps`` parameter picks some, so one long job
# can be cut into pieces (``reproduce`` runs each as its own experiment).
SWEEP_SECTIONS = ("lr", "batch_size", "throughput", "augment", "variations")


def check_sections(chosen: Iterable[str] | str, sections: Iterable[str]) -> list[str]:
    """``chosen`` as a list (one name given as text, ``-p sweeps lr``, is a list of one). Refuse a section name that is not one of ``sections`` (``sweeps=["lrs"]``) with its close
    matches, before any section runs; an empty choice is refused too (it would run nothing)."""
    __tracebackhide__ = True
    sections = list(sections)
    if isinstance(chosen, str):
        chosen = [chosen]
    chosen = list(chosen)
    unknown = [name for name in chosen if name not in sections]
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(did_you_mean(str(n), sections) for n in unknown)}; "
                          f"choose from {', '.join(sections)}")
    if not chosen:
        raise ConfigError(f"no section chosen; choose from {', '.join(sections)}")
    return chosen
