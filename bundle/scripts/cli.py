"""Unknown command-line options are refused: a misspelled ``--num_iteration 20`` must not start a 200,000-iteration run.
Nor may ``--overwrite false`` delete a run: Fire passes a lower-case ``false`` on as the text ``'false'``, which
every ``if overwrite:`` reads as on.

``python -m monai.bundle run`` accepts any ``--key value``: a key that is not an id of the config becomes a new id
that nothing reads. The first ``run`` step of every config calls :func:`refuse_unknown_options`, which compares the
ids given on the command line (and in ``--args_file``) with the ids of the config files themselves, read again
without the overrides, and raises a :class:`~scripts.errors.UserInputError` naming the closest valid id. A ``#``
path into a known id (``--network_def#dim 8``) and MONAI's own run arguments stay allowed. A yes/no option (an id
whose value in the config is ``true`` or ``false``) takes ``True``, ``False`` (Python literals, which Fire converts),
a bare ``--amp``, or ``true``; anything else (``false``, ``no``, ``off``) is refused the same way, before it can
switch something on.

Only a process started as ``python -m monai.bundle run`` is checked: MONAI Label, the Deploy app and tests that
instantiate a config in their own process have a command line of their own, which is not the bundle's.
"""

from __future__ import annotations

import difflib
import inspect
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from monai.bundle import ConfigParser
from monai.bundle import scripts as bundle_scripts
from monai.bundle.workflows import ConfigWorkflow

from .errors import UserInputError

__all__ = [
    "MONAI_RUN_ARGUMENTS",
    "COMPUTED_YES_NO",
    "launched_by_bundle_run",
    "command_line_options",
    "refuse_unknown_options",
]


def _parameters(*functions: Any) -> frozenset[str]:
    names = {n for f in functions for n, p in inspect.signature(f).parameters.items() if p.kind != p.VAR_KEYWORD}
    return frozenset(names - {"self"})


#: Arguments of ``monai.bundle run`` itself (config_file, meta_file, logging_file, tracking, args_file, run_id...).
MONAI_RUN_ARGUMENTS = _parameters(bundle_scripts.run, bundle_scripts.create_workflow, ConfigWorkflow.__init__)
#: The metadata MONAI reads into the config (``--_meta_#version`` is a path into it).
_META_ID = "_meta_"
#: Yes/no ids whose default is computed rather than ``true`` or ``false`` in the config.
COMPUTED_YES_NO = frozenset({"vary_degradations"})


def launched_by_bundle_run(argv: Sequence[str] | None = None) -> bool:
    """True when this process is ``python -m monai.bundle run ...`` (also under ``torchrun``)."""
    argv = sys.argv if argv is None else argv
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == "monai.bundle.__main__" and len(argv) > 1 and argv[1] == "run"


def command_line_options(args: Sequence[str]) -> dict[str, str | None]:
    """The ``--key value`` / ``--key=value`` options of a ``monai.bundle run`` command line, as Python Fire reads them.

    Args:
        args: the arguments after ``run``.

    Returns:
        Option name (``-`` read as ``_``, as Fire does) -> its value (None for a flag without one).
    """
    options: dict[str, str | None] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":  # what follows is for Fire itself (--help, --trace...)
            break
        if arg.startswith("--") and len(arg) > 2:
            key, equals, value = arg[2:].partition("=")
            if not equals:
                has_value = i + 1 < len(args) and not args[i + 1].startswith("--")
                value = args[i + 1] if has_value else None
                i += has_value
            options[key.replace("-", "_")] = value
        i += 1
    return options


def _parse_value(value: str | None) -> Any:
    """A command-line value as Fire gives it to MONAI (``"['a.json','b.json']"`` is a list)."""
    from fire.parser import DefaultParseValue

    return None if value is None else DefaultParseValue(value)


def _config_values(config_file: Any) -> dict[str, Any]:
    """The top-level ids of the config file(s) and their values, read without any override (``a#b`` keys count as
    ``a``)."""
    config = ConfigParser.load_config_files(config_file)
    return {str(key).split("#")[0]: value for key, value in config.items()} | {_META_ID: None}


def _check_yes_no(key: str, value: Any, default: Any) -> None:
    """Raise unless ``value`` reads as the user meant for a yes/no option (a non-empty string reads as on)."""
    if value is None or (isinstance(value, (bool, int)) and value in (0, 1)):  # None: a bare ``--key`` (True)
        return
    if isinstance(value, str) and value.strip().lower() == "true":
        return
    by_default = f"it is {default} by default" if isinstance(default, bool) else "by default it is computed"
    raise UserInputError(
        f"--{key} {value!r}: a yes/no option takes True or False; MONAI's command line passes this on as {value!r}, "
        f"which would count as on. Write --{key} False (or leave it out: {by_default})"
    )


def refuse_unknown_options(argv: Sequence[str] | None = None) -> None:
    """Raise if the ``monai.bundle run`` command line sets an id that none of its config files has, or gives a
    yes/no option a value that would not read as meant.

    Args:
        argv: the command line (default: ``sys.argv``); nothing is checked unless it is a ``monai.bundle run``.

    Raises:
        UserInputError: an unknown option, with the closest valid id; ``--overwrite false`` and the like.
    """
    argv = sys.argv if argv is None else argv
    if not launched_by_bundle_run(argv):
        return
    given: dict[str, Any] = {k: _parse_value(v) for k, v in command_line_options(argv[2:]).items()}
    args_file = given.get("args_file")
    if args_file:
        file_args = ConfigParser.load_config_file(str(args_file))
        given = {**{str(k): v for k, v in file_args.items()}, **given} if isinstance(file_args, Mapping) else given
    config_file = given.get("config_file")
    if not config_file:
        return  # MONAI itself refuses a run without a config
    values = _config_values(config_file)
    known = set(values) | MONAI_RUN_ARGUMENTS
    for key, value in given.items():
        if isinstance(values.get(key), bool) or (key in COMPUTED_YES_NO and key in values):
            _check_yes_no(key, value, values[key])
        if key.split("#")[0] in known:
            continue
        valid = sorted(k for k in known if not k.startswith("_"))
        close = difflib.get_close_matches(key.split("#")[0], valid, n=1)
        hint = f"did you mean --{close[0]}?" if close else "see the options in the README"
        files = ", ".join(map(str, config_file)) if isinstance(config_file, (list, tuple)) else str(config_file)
        raise UserInputError(f"unknown option --{key}: {files} has no id {key.split('#')[0]!r}; {hint}")
