"""Walk a data folder as ``os.walk`` does, following symbolic links to folders once each, never in a loop.

Data sets are often assembled from links (``/data/amir/ct -> /mnt/mayo``). ``os.walk`` lists a linked folder
but does not enter it, so its images were left out without a word; with ``followlinks=True`` a link back to
an ancestor would loop forever. :func:`walk_folders` enters each real folder once: a link to a folder outside
the walked tree is followed, and a link whose target is already searched or would search the tree again (an
ancestor: a loop; a folder inside the tree, found under its own name; a folder reached by another link) is skipped
with a warning naming it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["walk_folders"]

logger = logging.getLogger(__name__)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def walk_folders(
    root: str | os.PathLike, keep: Callable[[Path], bool] | None = None
) -> Iterator[tuple[Path, list[str], list[str]]]:
    """``os.walk(root)`` (top down, sub-folders and files sorted), entering linked folders once each.

    As with ``os.walk``, the caller may prune the yielded sub-folder list in place.

    Args:
        root: the folder to walk.
        keep: which sub-folders to enter (default: all); those it refuses are left out without a warning.

    Yields:
        ``(folder, sub-folder names, file names)``; ``folder`` is under ``root`` (through the link's name for a
        linked folder).
    """
    top = Path(root).resolve()
    seen: set[Path] = {top}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        folder = Path(dirpath)
        kept = [d for d in sorted(dirnames) if keep is None or keep(folder / d)]
        # real folders first, so that a link to a sibling is the one skipped
        entered = []
        for name in sorted(kept, key=lambda d: (folder / d).is_symlink()):
            path = folder / name
            target = path.resolve()
            if path.is_symlink() and (target in seen or _inside(target, top) or _inside(top, target)):
                logger.warning(
                    f"{path}: a link to {target}, a folder searched already, inside {root} (searched under its own "
                    "name) or holding it: skipped, so that no image is found twice and no loop is entered"
                )
                continue
            if target in seen:  # a real folder reached again through a linked ancestor
                logger.warning(f"{path}: the folder {target} was searched already: skipped")
                continue
            seen.add(target)
            entered.append(name)
        dirnames[:] = sorted(entered)
        yield folder, dirnames, sorted(filenames)
