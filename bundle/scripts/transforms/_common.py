"""Helpers shared by the transforms of this package (private: not exported)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Randomizable
from monai.utils import convert_data_type, convert_to_dst_type

__all__ = ["check_channel_first", "to_numpy", "like_input", "SeededSimulationd"]


def check_channel_first(img: Any, name: str, spatial_ndims: tuple[int, ...] = (2, 3)) -> None:
    """Raise a clear error unless ``img`` is a single-channel, channel-first array or tensor.

    Args:
        img: the image to check.
        name: the transform's name, used in the message.
        spatial_ndims: the accepted numbers of spatial dimensions (2 for (1,H,W), 3 for (1,H,W,D)).

    Raises:
        TypeError: ``img`` is neither a numpy array nor a torch tensor, or it is complex.
        ValueError: wrong number of dimensions or more than one channel.
    """
    if not isinstance(img, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(img).__name__}.")
    if img.is_complex() if isinstance(img, torch.Tensor) else np.iscomplexobj(img):
        raise TypeError(f"{name}: expected a real-valued image, got dtype {img.dtype}.")
    shapes = " or ".join("(1," + ",".join("HWD"[:n]) + ")" for n in spatial_ndims)
    if img.ndim - 1 not in spatial_ndims or img.shape[0] != 1:
        raise ValueError(f"{name}: expected a channel-first image of shape {shapes}, got shape {tuple(img.shape)}.")


def to_numpy(img: NdarrayOrTensor, dtype: type = np.float64) -> np.ndarray:
    """A numpy copy of ``img`` in ``dtype`` (always a copy, so the caller may modify it in place).

    Args:
        img: numpy array or torch tensor.
        dtype: numpy dtype of the copy.

    Returns:
        A new numpy array.
    """
    out = convert_data_type(img, output_type=np.ndarray, dtype=dtype)[0]
    return np.array(out, dtype=dtype, copy=True)


def of_task(data: Mapping[Hashable, Any], task_key: Hashable | None, task: str) -> bool:
    """Whether a dictionary item belongs to ``task`` (its ``task_key`` value: a string, or a 0-d array or tensor);
    every item does when ``task_key`` is None."""
    if task_key is None:
        return True
    value = data.get(task_key)
    return (value.item() if np.ndim(value) == 0 and hasattr(value, "item") else value) == task


def like_input(out: NdarrayOrTensor, img: NdarrayOrTensor) -> NdarrayOrTensor:
    """``out`` as float32 of the same kind as ``img`` (numpy -> numpy, torch -> torch on img's device, meta kept).

    Args:
        out: the computed result.
        img: the transform's input, whose type (and device, metadata) the output takes.

    Returns:
        ``out`` converted.
    """
    dtype = torch.float32 if isinstance(img, torch.Tensor) else np.float32
    return convert_to_dst_type(out, dst=img, dtype=dtype)[0]


class SeededSimulationd(Randomizable, MapTransform):
    """Base of the dictionary versions of the seeded dose simulations: it wraps the array transform ``simulator``.

    One seed is drawn per call and shared by all ``keys`` (MONAI's convention for random dictionary transforms);
    normally there is a single key. Subclasses change :meth:`simulate` to write more than the key itself.

    Args:
        keys: keys of the full-dose images to replace by simulated lower-dose ones.
        simulator: the array transform, ``Randomizable``, called as ``simulator(img, randomize=False)``.
        allow_missing_keys: do not raise if a key is missing.
    """

    def __init__(self, keys: KeysCollection, simulator: Randomizable, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.simulator = simulator

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> SeededSimulationd:
        """Seed the wrapped array transform (see ``Randomizable.set_random_state``)."""
        super().set_random_state(seed, state)
        self.simulator.set_random_state(seed, state)
        return self

    def randomize(self, data: object = None) -> None:
        """Draw the next noise seed."""
        self.simulator.randomize()

    def simulate(self, d: dict[Hashable, NdarrayOrTensor], key: Hashable) -> None:
        """Replace ``d[key]`` by its simulated lower-dose version (seed already drawn)."""
        d[key] = self.simulator(d[key], randomize=False)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """
        Args:
            data: dictionary holding the full-dose images under ``keys``.

        Returns:
            A shallow copy of ``data`` with the images replaced by simulated lower-dose ones.
        """
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            self.simulate(d, key)
        return d
