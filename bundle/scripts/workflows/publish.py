"""Publishing a training run's best weights where MONAI Label reads them, for a run that started from that file.

MONAI Label's inference loads ``<bundle>/models/model.pt``; its training task (``BundleTrainTask`` with
``"pretrained": true``, the default) puts a MONAI ``CheckpointLoader`` of that file first among ``train#handlers``
and runs ``train.json``, whose checkpoints go to the run folder (``runs/<run>/models/``). :func:`publish_best` is
the ``run`` step after the training: when the run started from ``target`` (a ``CheckpointLoader`` among the
handlers loaded it), the run's best weights replace ``target`` atomically, so Label's next inference uses them
(a new file, so Label's cache of the network, keyed by the file's modification time, is refreshed). A run that
did not start from ``target`` (any command-line run, a Label run from another ``model_filename`` or with
``"pretrained": false``) never replaces it: that would put weights over a model they were not trained from.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.handlers import CheckpointLoader

from ..atomic import atomic_path
from ..weights import load_checkpoint, network_state

__all__ = ["started_from", "publish_best"]

logger = logging.getLogger(__name__)


def started_from(handlers: Sequence[Any], path: str | os.PathLike) -> bool:
    """Whether one of the training ``handlers`` is a ``CheckpointLoader`` of ``path`` (as MONAI Label adds).

    Args:
        handlers: the trainer's handlers (``train#handlers``).
        path: a weights file.

    Returns:
        True if a ``CheckpointLoader`` loads ``path`` (same file after resolving links and relative paths).
    """
    target = Path(path).resolve()
    return any(isinstance(h, CheckpointLoader) and Path(h.load_path).resolve() == target for h in handlers)


def publish_best(best: str | os.PathLike, target: str | os.PathLike, handlers: Sequence[Any]) -> bool:
    """Replace ``target`` with the run's best weights ``best`` if the run started from ``target``.

    Args:
        best: the run's best weights (``BestCheckpoint``'s file, a plain state dict).
        target: the weights the run may replace (``<bundle>/models/model.pt``).
        handlers: the trainer's handlers, searched for a ``CheckpointLoader`` of ``target``.

    Returns:
        True if ``target`` was replaced.
    """
    if not started_from(handlers, target):
        return False
    if not Path(best).is_file():
        logger.warning(f"{best}: no best weights (no validation ran); {target} is unchanged")
        return False
    network_state(load_checkpoint(best), best)  # a readable state dict, or one error line naming the file
    with atomic_path(target) as tmp:
        shutil.copyfile(best, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    logger.info(f"Published the run's best weights {best} to {target} (the run started from it)")
    return True
