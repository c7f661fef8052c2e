"""The ONNX cache: each weights file is exported to ONNX once, kept in a folder the bundle owns, checked on reuse.

An entry is keyed by what makes the graph: the weights' sha256, the network's config (``network_def``, less the
arguments that change how it computes but not what), the ONNX opset, the traced example shape and the exporter
(PyTorch's version). It is two files, ``<key>.onnx`` (written by :func:`scripts.export.export_onnx`, which checks
it against eager PyTorch before writing) and ``<key>.json`` (the key and the model's sha256), each written
atomically. On reuse the model's bytes are hashed again: a model that is missing, truncated or changed since it
was written is exported anew (with a warning), never trusted.

The folder carries the bundle's marker (:mod:`scripts.ownership`, kind :data:`CACHE_KIND`); a folder that exists,
holds files and has no marker (or another kind's) is the user's, and is not written to.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import remove_stale_temporaries, write_text_atomic
from .export import EXAMPLE_SHAPE, OPSET_VERSION, export_onnx
from .ownership import MARKER, folder_kind, is_empty_folder, mark_folder
from .weights import file_sha256

__all__ = ["CACHE_KIND", "DEFAULT_CACHE_DIR", "KEY_FORMAT", "MAX_ENTRIES", "cache_key", "OnnxCache"]

logger = logging.getLogger(__name__)

#: The marker's kind of an ONNX cache folder.
CACHE_KIND = "onnx-cache"
#: Where the configs keep the cache unless told otherwise (``onnx_cache_dir``): shared by every run of the user.
DEFAULT_CACHE_DIR = Path("~/.cache/amir_bundle/onnx")
#: Version of the key: raised when the export changes in a way the other fields do not show.
KEY_FORMAT = 1
#: Entries kept: the most recently used (the paper AMIR's model is 94 MB; each weights file a user runs adds one).
MAX_ENTRIES = 8
_ENTRY = re.compile(r"[0-9a-f]{32}")  # an entry's name: 32 hex digits of its key


def cache_key(
    weights_sha256: str, network_config: Any, opset_version: int = OPSET_VERSION
) -> tuple[str, dict[str, Any]]:
    """The cache entry's name and its key: everything the exported graph depends on.

    Args:
        weights_sha256: the weights file's sha256.
        network_config: the network's config (JSON-compatible; e.g. ``network_def`` as the config gives it).
        opset_version: ONNX opset of the export.

    Returns:
        ``(name, key)``: 32 hex digits of the key's sha256, and the key itself.
    """
    key = {
        "format": KEY_FORMAT,
        "weights_sha256": weights_sha256,
        "network": json.loads(json.dumps(network_config, sort_keys=True, default=str)),
        "opset": int(opset_version),
        "example_shape": list(EXAMPLE_SHAPE),
        "torch": torch.__version__,
    }
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return name, key


class OnnxCache:
    """A folder of exported ONNX models, one per weights file and network config.

    Args:
        folder: the cache folder; created and marked on first use.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).expanduser()

    def problem(self) -> str | None:
        """Why the folder cannot be the cache (one phrase), or None when it can: missing, empty, or the bundle's."""
        path = self.folder
        if path.exists() and not path.is_dir():
            return f"{path} is a file"
        if path.is_dir() and not is_empty_folder(path) and folder_kind(path) != CACHE_KIND:
            return f"{path} is a folder the bundle did not create as its ONNX cache (no {MARKER} of that kind)"
        probe = path
        while not probe.exists():  # the first folder that exists must let us create the rest
            probe = probe.parent
        if not os.access(probe, os.W_OK | os.X_OK):
            return f"{probe} cannot be written"
        return None

    def prepare(self) -> None:
        """Create and mark the folder, and remove what exports killed mid-write left there.

        Raises:
            OSError: the folder cannot be created or marked.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        if folder_kind(self.folder) != CACHE_KIND:
            mark_folder(self.folder, CACHE_KIND)
        for path in remove_stale_temporaries(self.folder):
            logger.info(f"removed {path}, a partial export of an earlier run that was stopped")

    def paths(self, name: str) -> tuple[Path, Path]:
        """The model and record files of entry ``name``."""
        return self.folder / f"{name}.onnx", self.folder / f"{name}.json"

    def damage(self, name: str, key: Mapping[str, Any]) -> str | None:
        """Why entry ``name`` cannot be used (``"missing"`` when it was never written), or None when it is whole."""
        model, record = self.paths(name)
        if not model.exists() and not record.exists():
            return "missing"
        try:
            recorded = json.loads(record.read_text())
        except (OSError, ValueError):
            return f"{record.name} is missing or unreadable"
        if not isinstance(recorded, dict) or recorded.get("key") != dict(key):
            return f"{record.name} records another key"
        try:
            digest = file_sha256(model)
        except OSError as e:
            return f"{model.name} cannot be read ({e.strerror or e})"
        if digest != recorded.get("onnx_sha256"):
            return f"{model.name} has changed since it was written (its sha256 does not match {record.name})"
        return None

    def model(
        self,
        network: nn.Module,
        weights_path: str | os.PathLike,
        network_config: Any,
        weights_sha256: str | None = None,
        opset_version: int = OPSET_VERSION,
    ) -> Path:
        """The ONNX model of ``network`` with the weights of ``weights_path``: the cached one, or a new export.

        Args:
            network: the eager network, its weights loaded from ``weights_path``; it is not changed.
            weights_path: the weights file (its sha256 keys the entry; named in the log).
            network_config: the network's config (see :func:`cache_key`).
            weights_sha256: the file's sha256 if already known.
            opset_version: ONNX opset.

        Returns:
            The path of the checked model.

        Raises:
            OSError: the folder cannot be written.
            RuntimeError: the export does not match the eager network (nothing is written).
        """
        self.prepare()
        digest = weights_sha256 or file_sha256(weights_path)
        name, key = cache_key(digest, network_config, opset_version)
        model, record = self.paths(name)
        why = self.damage(name, key)
        if why is None:
            logger.info(f"ONNX model of {weights_path}: {model} (cached)")
            os.utime(record)  # used now: kept by prune()
            return model
        if why == "missing":
            logger.info(f"exporting {weights_path} to ONNX, once for these weights: {model}")
        else:
            logger.warning(f"{model}: the cached ONNX model of {weights_path} is damaged ({why}); exporting it again")
        with torch.inference_mode(False), torch.no_grad():  # tracing fails on inference tensors
            export_onnx(network, model, opset_version=opset_version)
        write_text_atomic(json.dumps({"key": key, "onnx_sha256": file_sha256(model)}, indent=1) + "\n", record)
        self.prune()
        return model

    def prune(self, keep: int = MAX_ENTRIES) -> list[Path]:
        """Remove all but the ``keep`` most recently used entries (by their record's time; only the cache's files).

        Returns:
            The files removed.
        """
        records = [p for p in self.folder.glob("*.json") if _ENTRY.fullmatch(p.stem) and p.is_file()]
        records.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        removed = []
        for record in records[keep:]:
            for path in (record.with_suffix(".onnx"), record):
                if path.is_file() and not path.is_symlink():
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed
