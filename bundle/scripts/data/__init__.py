"""Data lists (IXI, AAPM-Mayo, PET, all-in-one, demo, a folder of own images), slicing and splits, the pair loader.

The item schema is documented in :mod:`scripts.data.slices`; :func:`build_datalist` is the entry point and
:class:`LoadSlicePaird` (wrapped by :func:`make_dataset`) turns items into ``(1, H, W)`` LQ / HQ pairs.
"""

from .all_in_one import DATASETS, build_all_in_one_datalist, build_datalist, find_task_roots
from .datasets import make_dataset, slice_items
from .folder import build_folder_datalist, vary_by_default
from .ixi import build_ixi_datalist, find_ixi_volumes
from .loading import LoadSlice, LoadSlicePairD, LoadSlicePaird, LoadSlicePairDict, item_id, item_seed, read_slice
from .mayo import MAYO_PATIENTS, MAYO_SPLIT, build_mayo_datalist, find_mayo_series, parse_mayo_series
from .pet import build_pet_datalist, find_pet_entries, parse_drf
from .slices import (
    TASK_PLANES,
    TASKS,
    DataError,
    assign_splits,
    limit_per_task,
    normalize_split,
    select_subjects,
    volume_slices,
)

_DEMO_NAMES = ("build_demo_datalist", "build_demo_set", "default_demo_dir")


def __getattr__(name: str):
    # the demo module is imported on first use, so that `python -m scripts.data.demo` does not find it already
    # imported by this package (runpy warns then)
    if name in _DEMO_NAMES:
        from . import demo

        return getattr(demo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DATASETS",
    "MAYO_PATIENTS",
    "MAYO_SPLIT",
    "TASK_PLANES",
    "TASKS",
    "DataError",
    "LoadSlice",
    "LoadSlicePairD",
    "LoadSlicePairDict",
    "LoadSlicePaird",
    "assign_splits",
    "build_all_in_one_datalist",
    "build_datalist",
    "build_demo_datalist",
    "build_demo_set",
    "build_folder_datalist",
    "build_ixi_datalist",
    "build_mayo_datalist",
    "build_pet_datalist",
    "default_demo_dir",
    "find_ixi_volumes",
    "find_mayo_series",
    "find_pet_entries",
    "find_task_roots",
    "item_id",
    "item_seed",
    "limit_per_task",
    "make_dataset",
    "normalize_split",
    "parse_drf",
    "parse_mayo_series",
    "read_slice",
    "select_subjects",
    "slice_items",
    "vary_by_default",
    "volume_slices",
]
