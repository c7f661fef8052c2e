"""Verified weight loading: a checkpoint is checked before ``torch.load`` reads it, and every failure is one line.

``torch.save`` writes a zip archive whose members carry CRC-32 checksums, but ``torch.load`` does not check them:
weights whose bytes were damaged on disk or in a copy load without a word and restore wrong images. Every weight
file the bundle reads (inference, evaluation, analysis, export, resume) goes through :func:`load_checkpoint`, which
checks the archive first and then loads with ``weights_only=True``; a problem is a
:class:`~scripts.errors.UserInputError` naming the file and the cause, never PyTorch's advice to load the file
with ``weights_only=False`` (which would run whatever code the file holds).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

from .errors import UserInputError

__all__ = ["file_sha256", "run_weights", "load_checkpoint", "network_state", "load_weights", "WeightsLoader"]

#: What to do when weights do not fit the network.
NETWORK_HINT = "give the --network_def the weights were trained with"
_ZIP_START = b"PK\x03\x04"
_PICKLE_START = b"\x80"  # a legacy (pre-zip) torch.save file starts with a pickle protocol byte


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, as hex (the weights' identity in reports)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def run_weights(default: str | os.PathLike, runs_dir: str | os.PathLike, run_name: str | None = None) -> str:
    """The weights an evaluation or analysis uses: the best model of training run ``run_name``, or ``default``.

    Args:
        default: the weights when no run is named (the bundle's ``models/model.pt``).
        runs_dir: the folder of the training runs.
        run_name: a training run's name (``--run_name``); None: ``default``.

    Returns:
        ``runs_dir/run_name/models/model.pt``, or ``default``.

    Raises:
        UserInputError: ``run_name`` is not a training run of the bundle in ``runs_dir``, or has no best model yet.
    """
    from .ownership import folder_kind
    from .workflows.runs import RUN_KIND, list_runs, run_dir  # imported here: runs imports this module

    if run_name is None:
        return os.fspath(default)
    folder = Path(run_dir(runs_dir, run_name))
    if folder_kind(folder) != RUN_KIND:
        runs = ", ".join(list_runs(runs_dir)) or "none"
        raise UserInputError(
            f"{folder}: --run_name {run_name} is not a training run of this bundle (runs in {runs_dir}: {runs}); "
            "name a training run, or give the weights with --ckpt_path."
        )
    weights = folder / "models" / "model.pt"
    if not weights.is_file():
        raise UserInputError(
            f"{weights}: run {run_name} has no best model yet (it is saved at the run's first validation); "
            "train longer or give the weights with --ckpt_path."
        )
    return os.fspath(weights)


def _check_archive(path: Path) -> None:
    """Raise unless ``path`` is a complete ``torch.save`` archive whose members match their CRC-32."""
    if not path.exists():
        raise UserInputError(f"{path}: no such weights file; give the path of a checkpoint (--ckpt_path).")
    if not path.is_file():
        raise UserInputError(f"{path}: is not a file; give the path of a checkpoint file (--ckpt_path).")
    if path.stat().st_size == 0:
        raise UserInputError(f"{path}: the weights file is empty (0 bytes); copy or save it again.")
    with open(path, "rb") as f:
        start = f.read(4)
    if not zipfile.is_zipfile(path):
        if start.startswith(_PICKLE_START):
            return  # the legacy format has no checksums; torch.load still reads it with weights_only=True
        if start == _ZIP_START:
            raise UserInputError(
                f"{path}: the weights file is truncated (it ends before its zip directory); copy it again."
            )
        raise UserInputError(f"{path}: not a checkpoint (not a file written by torch.save).")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise UserInputError(f"{path}: the weights file is damaged ({e}); copy it again.") from e
    if bad is not None:
        raise UserInputError(
            f"{path}: the weights file is damaged: {bad} fails its CRC check (its bytes changed after it was "
            "written); copy it again."
        )


def _load_problem(error: BaseException) -> str:
    """Why ``torch.load`` refused a file, in one sentence without PyTorch's ``weights_only=False`` advice."""
    text = str(error)
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL (\S+)", text)
        what = f"pickled code or objects ({found.group(1)})" if found else "pickled objects other than tensors"
        return f"refused for safety: it holds {what}, which are never loaded; use weights saved as a state dict"
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return f"not a readable checkpoint ({type(error).__name__}: {first[:200]})"


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device | None = "cpu", mmap: bool = False
) -> Any:
    """Check a checkpoint file's archive (CRC-32 of every member), then ``torch.load`` it with ``weights_only=True``.

    Args:
        path: the checkpoint file.
        map_location: where the tensors go.
        mmap: map the tensors from the file instead of reading them (to look at a large checkpoint's metadata).

    Returns:
        What the file holds (tensors, containers and plain values only).

    Raises:
        UserInputError: the file is missing, empty, truncated, damaged, not a checkpoint, or refused for safety
            (it holds pickled code); the message names the file.
    """
    path = Path(path)
    _check_archive(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError, KeyError) as e:
        raise UserInputError(f"{path}: {_load_problem(e)}.") from None


def network_state(checkpoint: Any, path: str | os.PathLike, key: str = "model") -> Mapping[str, torch.Tensor]:
    """The network's state dict in a checkpoint: the checkpoint itself, or its ``key`` entry (a training checkpoint).

    Raises:
        UserInputError: the checkpoint holds no state dict (naming the file and what it holds).
    """
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
        checkpoint = checkpoint[key]
    if not isinstance(checkpoint, Mapping) or not checkpoint:
        what = type(checkpoint).__name__ if not isinstance(checkpoint, Mapping) else "an empty dict"
        raise UserInputError(f"{path}: wrong content: it holds {what}, not a network's weights.")
    others = [k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise UserInputError(
            f"{path}: wrong content: {others[0]!r} is not a tensor (keys: {sorted(map(str, checkpoint))[:5]}...), "
            "not a network's weights."
        )
    return checkpoint


def _first_difference(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> tuple[str, int]:
    """The first key where ``state`` does not fit ``expected``, in words, and the number of differing keys."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    count = len(missing) + len(unexpected) + len(shapes)
    if shapes:
        k = shapes[0]
        first = f"{k} has shape {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} in the network"
    elif missing:
        first = f"the network's {missing[0]} is not in the file"
    elif unexpected:
        first = f"the file's {unexpected[0]} is not in the network"
    else:
        return "", 0
    return first, count


def load_weights(
    network: nn.Module, path: str | os.PathLike, map_location: str | torch.device | None = "cpu", key: str = "model"
) -> nn.Module:
    """Load a verified checkpoint into ``network``, strictly (every key, every shape).

    Args:
        network: the network (a DDP/DataParallel wrapper loads into its module).
        path: a state dict file, or a training checkpoint holding one under ``key``.
        map_location: where the tensors go.
        key: the network's entry in a training checkpoint.

    Returns:
        ``network``, in eval mode.

    Raises:
        UserInputError: the file cannot be loaded (see :func:`load_checkpoint`), holds no state dict, or its keys or
            shapes do not fit ``network`` (the first difference and the number of differing keys).
    """
    target = network.module if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else network
    state = network_state(load_checkpoint(path, map_location=map_location), path, key)
    first, count = _first_difference(target.state_dict(), state)
    if count:
        more = f" (and {count - 1} more differing keys)" if count > 1 else ""
        raise UserInputError(f"{path}: the weights do not fit the network: {first}{more}; {NETWORK_HINT}.")
    target.load_state_dict(state, strict=True)
    return network.eval()


class WeightsLoader:
    """Ignite handler with the config shape of MONAI's ``CheckpointLoader`` that loads through :func:`load_weights`.

    The weights are loaded when the engine starts (as MONAI's loader does, so that a config is instantiated, e.g. by
    MONAI's property checks, without weights), before any input is read or any output written.

    Args:
        load_path: the checkpoint file.
        load_dict: networks to load, by their key in a training checkpoint (``{"model": network}``); a file that is
            a bare state dict loads into the only network given.
        map_location: where the tensors go.
    """

    def __init__(
        self,
        load_path: str | os.PathLike,
        load_dict: Mapping[str, nn.Module],
        map_location: str | torch.device | None = "cpu",
    ) -> None:
        if not load_dict or not all(isinstance(m, nn.Module) for m in load_dict.values()):
            raise TypeError("WeightsLoader loads networks: load_dict maps checkpoint keys to nn.Module objects.")
        self.load_path = Path(load_path)
        self.load_dict = dict(load_dict)
        self.map_location = map_location

    def attach(self, engine: Engine) -> None:
        """Load the weights when ``engine`` starts."""
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        """Load every network of ``load_dict`` from ``load_path``."""
        for key, network in self.load_dict.items():
            load_weights(network, self.load_path, map_location=self.map_location, key=key)
