"""Dose levels that vary during training: low-dose CT and PET at a level drawn per call (MONAI random transforms).

The paper trains on one dose level per task (quarter-dose CT, DRF-12 PET), so a network learns to remove one
amount of noise. These transforms draw the level per call, log-uniformly from a range (``dose_range`` around
quarter dose, ``drf_range`` around DRF 12: the ranges' geometric means are the paper's levels), and add the
noise of that level to the full-dose image.

Speed: the exact simulations cost 1-2 s per 512 x 512 CT slice and 0.3-0.6 s per PET slice, more than a CPU
training step of the demo network. So each slice's noise is simulated exactly ``bank_size`` times at a reference
level, once (the slice's *noise bank*, kept in memory, least recently used slices dropped first), and every call

- combines the K stored realisations ``n_k`` with random weights ``w`` of unit norm: ``sum_k w_k n_k``.
  Independent zero-mean realisations with ``sum w_k^2 = 1`` combine into noise of the same covariance (same
  level, same texture that follows the anatomy): for Gaussian noise, a new realisation of the same noise;
- scales it to the drawn level. CT (:class:`~scripts.transforms.SimulateLowDoseCT`): the inserted post-log
  variance of dose ``a`` on an input of dose ``r`` is ``exp(p) / I0 (1/a - 1/r)`` plus an electronic term below a
  few per cent of it, so the std scales by ``sqrt((1/a - 1/r) / (1/a0 - 1/r))``. PET
  (:class:`~scripts.transforms.SimulateLowDosePET`): thinning full-dose counts ``N`` to ``M`` at DRF ``d`` gives
  ``d M - N`` of variance ``(d - 1) N``, uncorrelated with ``N``, so the low-dose image is the full-dose one plus
  noise whose std scales by ``sqrt((d - 1) / (d0 - 1))`` (through OSEM, linear to first order).

The bank is seeded from the slice's content (and ``bank_seed``), so it does not depend on the order items come in;
the per-call level and weights come from the transform's random state (``set_random_state``, MONAI's
``set_determinism``).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Randomizable, Transform
from monai.utils import TransformBackends

from ._common import check_channel_first, like_input, of_task, to_numpy
from .ct_dose import AEC_REFERENCE_DIAMETER_CM, KERNEL_RESOLUTION_CM, SimulateLowDoseCT
from .intensity import get_window
from .pet_dose import SimulateLowDosePET

__all__ = ["NoiseBank", "RandLowDoseCT", "RandLowDoseCTd", "RandLowDosePET", "RandLowDosePETd"]


class NoiseBank:
    """``size`` exact noise realisations per slice, computed on first use and kept for ``cache_size`` slices.

    Args:
        size: realisations per slice.
        cache_size: slices kept (least recently used dropped first).
        seed: mixed into every slice's seeds.
    """

    def __init__(self, size: int = 8, cache_size: int = 32, seed: int = 0) -> None:
        if int(size) < 1 or int(cache_size) < 1:
            raise ValueError(f"NoiseBank: size and cache_size must be >= 1, got {size} and {cache_size}.")
        self.size, self.cache_size, self.seed = int(size), int(cache_size), int(seed)
        self._banks: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def get(self, img: np.ndarray, params: tuple, simulate: Callable[[np.ndarray, int], np.ndarray]) -> np.ndarray:
        """The ``(size, H, W)`` float32 bank of the ``(H, W)`` slice ``img``.

        Args:
            img: the slice.
            params: whatever else changes the noise (geometry, level), part of the key.
            simulate: ``simulate(img, seed)`` -> one noise realisation ``(H, W)``.
        """
        digest = hashlib.blake2b(np.ascontiguousarray(img, dtype=np.float32).tobytes(), digest_size=16)
        digest.update(repr((img.shape, params, self.seed)).encode())
        key = digest.digest()
        if key in self._banks:
            self._banks.move_to_end(key)
            return self._banks[key]
        seeds = [
            int.from_bytes(hashlib.blake2b(key + bytes([k]), digest_size=4).digest(), "little")
            for k in range(self.size)
        ]
        bank = np.stack([simulate(img, s) for s in seeds]).astype(np.float32)
        self._banks[key] = bank
        while len(self._banks) > self.cache_size:
            self._banks.popitem(last=False)
        return bank


class _RandNoiseLevel(Randomizable, Transform):
    """Base: full-dose slice in, the slice plus banked noise of a level drawn per call out (see module docstring)."""

    backend = [TransformBackends.NUMPY]
    name = "RandNoiseLevel"

    def __init__(
        self, level_range: Sequence[float], bank_size: int, cache_size: int, bank_seed: int, seed: int | None
    ) -> None:
        low, high = (float(v) for v in level_range)
        if not low <= high:
            raise ValueError(f"{self.name}: the range must be (low, high) with low <= high, got {tuple(level_range)}.")
        self.level_range = (low, high)
        self.bank = NoiseBank(bank_size, cache_size, bank_seed)
        self.level = math.sqrt(low * high)
        self._weights = np.ones(self.bank.size)
        self.set_random_state(seed)

    def randomize(self, data: object = None) -> None:
        """Draw the level (log-uniform in the range) and the combination weights of the next call."""
        low, high = self.level_range
        self.level = float(math.exp(self.R.uniform(math.log(low), math.log(high))))
        self._weights = self.R.standard_normal(self.bank.size)

    def _noisy(self, img: NdarrayOrTensor, params: tuple, simulate: Callable, scale: float) -> Any:
        check_channel_first(img, self.name, spatial_ndims=(2,))
        x = to_numpy(img, np.float32)[0]
        bank = self.bank.get(x, params, simulate)
        weights = self._weights / max(float(np.linalg.norm(self._weights)), 1e-12)
        return x, np.tensordot(weights.astype(np.float32), bank, axes=1) * np.float32(scale)


class RandLowDoseCT(_RandNoiseLevel):
    """A lower-dose CT slice (HU) from a full-dose one, at a dose fraction drawn per call.

    See the module docstring. Input and output ``(1, H, W)`` in HU, float32, numpy or torch like the input.

    Args:
        dose_range: ``(low, high)`` dose fractions; the dose is drawn log-uniformly (``low == high``: fixed).
        reference_dose: dose of the banked realisations (0.25, the paper's).
        bank_size: exact realisations per slice.
        cache_size: slices whose banks are kept.
        bank_seed: seed mixed into the banks' seeds.
        seed: seed of the random state of the per-call draws (or call ``set_random_state``).
        kernel_resolution_cm: as for :class:`~scripts.transforms.SimulateLowDoseCT`; the default, a B30-like
            kernel's, is that of the corpus (:func:`~scripts.transforms.ct_simulation_args`).
        aec_reference_diameter_cm: as for :class:`~scripts.transforms.SimulateLowDoseCT`; default: the corpus's.
        kwargs: other :class:`~scripts.transforms.SimulateLowDoseCT` arguments (``pixel_size_cm``, ``i0``,
            ``input_dose_fraction``, ``circle``, ...; not ``dose_fraction`` or ``seed``). ``circle`` is used only
            for square slices without a body diameter.

    Raises:
        ValueError: a range outside ``(0, input_dose_fraction]``, or a bad simulator argument.
    """

    name = "RandLowDoseCT"

    def __init__(
        self,
        dose_range: Sequence[float] = (0.15, 0.4),
        reference_dose: float = 0.25,
        bank_size: int = 8,
        cache_size: int = 32,
        bank_seed: int = 0,
        seed: int | None = None,
        kernel_resolution_cm: float | None = KERNEL_RESOLUTION_CM,
        aec_reference_diameter_cm: float | None = AEC_REFERENCE_DIAMETER_CM,
        **kwargs: Any,
    ) -> None:
        super().__init__(dose_range, bank_size, cache_size, bank_seed, seed)
        self.simulator_kwargs = {
            "kernel_resolution_cm": kernel_resolution_cm,
            "aec_reference_diameter_cm": aec_reference_diameter_cm,
            **kwargs,
        }
        SimulateLowDoseCT(reference_dose, **self.simulator_kwargs)  # checks the arguments
        self.input_dose = self.simulator_kwargs.get("input_dose_fraction", 1.0)
        top = 1.0 if self.input_dose is None else float(self.input_dose)
        if not (0.0 < self.level_range[0] and self.level_range[1] <= top and reference_dose < top):
            raise ValueError(
                f"RandLowDoseCT: need 0 < dose_range <= {top} and reference_dose < {top}, got {self.level_range} "
                f"and {reference_dose}."
            )
        self.reference_dose = float(reference_dose)

    @property
    def dose_fraction(self) -> float:
        """The dose fraction of the last call (or of the next, after ``randomize``)."""
        return self.level

    def _inserted_variance(self, dose: float) -> float:
        return 1.0 / dose - (0.0 if self.input_dose is None else 1.0 / float(self.input_dose))

    def __call__(
        self,
        img: NdarrayOrTensor,
        pixel_size_cm: float | None = None,
        body_diameter_cm: float | None = None,
        randomize: bool = True,
    ) -> NdarrayOrTensor:
        """
        Args:
            img: full-dose CT slice in HU, ``(1, H, W)``.
            pixel_size_cm: this slice's pixel size (None: the one given at construction, else 0.07).
            body_diameter_cm: diameter of the body this slice is a crop of (None: it holds the whole body).
            randomize: draw a new dose and noise (False repeats the last draw).

        Returns:
            The lower-dose slice in HU.
        """
        kwargs = dict(self.simulator_kwargs)
        if pixel_size_cm is not None:
            kwargs["pixel_size_cm"] = float(pixel_size_cm)
        square = img.shape[-1] == img.shape[-2]
        kwargs["circle"] = bool(kwargs.get("circle", True)) and square and body_diameter_cm is None
        kwargs["body_diameter_cm"] = body_diameter_cm

        def simulate(x: np.ndarray, seed: int) -> np.ndarray:
            return np.asarray(SimulateLowDoseCT(self.reference_dose, seed=seed, **kwargs)(x[None]))[0] - x

        if randomize:
            self.randomize()
        scale = math.sqrt(self._inserted_variance(self.level) / self._inserted_variance(self.reference_dose))
        params = (self.reference_dose, tuple(sorted(kwargs.items())))
        x, noise = self._noisy(img, params, simulate, scale)
        return like_input((x + noise)[None], img)


class RandLowDosePET(_RandNoiseLevel):
    """A low-dose PET slice from a full-dose one (SUV or any activity unit), at a DRF drawn per call.

    See the module docstring. Input and output ``(1, H, W)``, float32, numpy or torch like the input; the output
    is clipped at 0 (activity).

    Args:
        drf_range: ``(low, high)`` dose reduction factors; the DRF is drawn log-uniformly (``low == high``: fixed).
        reference_drf: DRF of the banked realisations (12, the paper's).
        bank_size: exact realisations per slice.
        cache_size: slices whose banks are kept.
        bank_seed: seed mixed into the banks' seeds.
        seed: seed of the random state of the per-call draws (or call ``set_random_state``).
        kwargs: :class:`~scripts.transforms.SimulateLowDosePET` arguments (``total_counts``, ``num_angles``, ...;
            not ``drf`` or ``seed``).

    Raises:
        ValueError: a range below 1, a reference DRF <= 1, or a bad simulator argument.
    """

    name = "RandLowDosePET"

    def __init__(
        self,
        drf_range: Sequence[float] = (8.0, 20.0),
        reference_drf: float = 12.0,
        bank_size: int = 8,
        cache_size: int = 32,
        bank_seed: int = 0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(drf_range, bank_size, cache_size, bank_seed, seed)
        if not (self.level_range[0] >= 1.0 and reference_drf > 1.0):
            raise ValueError(
                f"RandLowDosePET: need drf_range >= 1 and reference_drf > 1, got {drf_range}, {reference_drf}."
            )
        self.simulator = SimulateLowDosePET(reference_drf, **kwargs)  # also checks the arguments
        self.reference_drf = float(reference_drf)

    @property
    def drf(self) -> float:
        """The DRF of the last call (or of the next, after ``randomize``)."""
        return self.level

    def _simulate(self, x: np.ndarray, seed: int) -> np.ndarray:
        self.simulator.set_random_state(seed)
        low, high = self.simulator.simulate_pair(x[None])
        return np.asarray(low)[0] - np.asarray(high)[0]

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """
        Args:
            img: full-dose PET slice, ``(1, H, W)``.
            randomize: draw a new DRF and noise (False repeats the last draw).

        Returns:
            The low-dose slice, same units.
        """
        if randomize:
            self.randomize()
        scale = math.sqrt((self.level - 1.0) / (self.reference_drf - 1.0))
        x, noise = self._noisy(img, (self.reference_drf,), self._simulate, scale)
        return like_input(np.maximum(x + noise, 0.0)[None], img)


class _RandNoiseLeveld(Randomizable, MapTransform):
    """Base of the dictionary versions: replace the LQ of one task's items by the HQ plus noise of a drawn level."""

    def __init__(
        self,
        keys: KeysCollection,
        transform: _RandNoiseLevel | None,
        task: str,
        task_key: str | None,
        window: str | Sequence[float] | None,
        allow_missing_keys: bool,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 2:
            raise ValueError(f"{type(self).__name__}: keys must be (LQ key, HQ key), got {self.keys}")
        self.image_key, self.label_key = self.keys
        self.transform, self.task, self.task_key = transform, task, task_key
        self.window = None if window is None else (get_window(window) if isinstance(window, str) else tuple(window))

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> Randomizable:
        """Seed the wrapped array transform (see ``Randomizable.set_random_state``)."""
        super().set_random_state(seed, state)
        if self.transform is not None:
            self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data: object = None) -> None:
        """Draw the next level and noise."""
        if self.transform is not None:
            self.transform.randomize()

    def degrade(self, hq: NdarrayOrTensor, d: Mapping[Hashable, Any]) -> NdarrayOrTensor:
        """The LQ of the full-dose ``hq`` (physical units) with the level already drawn."""
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """
        Args:
            data: an item holding the HQ under the second key (physical units, or [0, 1] of ``window``).

        Returns:
            A shallow copy with the LQ key replaced, for items of the task; other items unchanged.
        """
        d = dict(data)
        if self.transform is None or not of_task(d, self.task_key, self.task):
            return d
        if self.label_key not in d:
            if self.allow_missing_keys:
                return d
            raise KeyError(f"{type(self).__name__}: the item has no {self.label_key!r} (full-dose image).")
        self.randomize()
        hq = d[self.label_key]
        if self.window is None:
            d[self.image_key] = self.degrade(hq, d)
            return d
        low, high = self.window
        out = self.degrade(to_numpy(hq, np.float32) * (high - low) + low, d)
        d[self.image_key] = like_input(np.clip((to_numpy(out, np.float32) - low) / (high - low), 0.0, 1.0), hq)
        return d


class RandLowDoseCTd(_RandNoiseLeveld):
    """Dictionary version of :class:`RandLowDoseCT`: the LQ of each CT item becomes its HQ at a dose drawn per call.

    Args:
        keys: ``(LQ key, HQ key)``.
        dose_range: see :class:`RandLowDoseCT`; None: off, the items' own LQ is kept (the paper's fixed pairs).
        task_key: item key of the task; only items whose task is ``task`` are changed (None: every item).
        task: the task degraded.
        spacing_key: item key of the in-plane pixel spacing in mm (a number or (row, column); their mean is used),
            overriding ``pixel_size_cm`` where present.
        body_diameter_key: item key of the diameter (cm) of the body a cropped slice was cut from (<= 0: none).
        window: None if the images are in HU; else they are in [0, 1] of this window (a modality name or
            ``(low, high)``, as after :class:`~scripts.transforms.IntensityWindowd`): converted for the simulation,
            and the LQ is windowed (clipped) again.
        allow_missing_keys: leave items without the HQ key unchanged.
        kwargs: the other arguments of :class:`RandLowDoseCT`.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        dose_range: Sequence[float] | None = (0.15, 0.4),
        task_key: str | None = "task",
        task: str = "ct",
        spacing_key: str | None = "spacing",
        body_diameter_key: str | None = "body_diameter_cm",
        window: str | Sequence[float] | None = None,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        transform = None if dose_range is None else RandLowDoseCT(dose_range, **kwargs)
        super().__init__(keys, transform, task, task_key, window, allow_missing_keys)
        self.spacing_key, self.body_diameter_key = spacing_key, body_diameter_key

    def degrade(self, hq: NdarrayOrTensor, d: Mapping[Hashable, Any]) -> NdarrayOrTensor:
        """HQ (HU) -> LQ (HU) with this item's geometry."""
        spacing = d.get(self.spacing_key) if self.spacing_key is not None else None
        pixel_cm = None if spacing is None else float(np.mean(np.asarray(spacing, dtype=float))) / 10.0
        body = d.get(self.body_diameter_key) if self.body_diameter_key is not None else None
        body_cm = float(body) if body is not None and float(body) > 0 else None
        return self.transform(hq, pixel_size_cm=pixel_cm, body_diameter_cm=body_cm, randomize=False)


class RandLowDosePETd(_RandNoiseLeveld):
    """Dictionary version of :class:`RandLowDosePET`: the LQ of each PET item becomes its HQ at a DRF drawn per call.

    Args:
        keys: ``(LQ key, HQ key)``.
        drf_range: see :class:`RandLowDosePET`; None: off, the items' own LQ is kept (the paper's fixed pairs).
        task_key: item key of the task; only items whose task is ``task`` are changed (None: every item).
        task: the task degraded.
        window: as for :class:`RandLowDoseCTd` (e.g. ``"pet"``).
        allow_missing_keys: leave items without the HQ key unchanged.
        kwargs: the other arguments of :class:`RandLowDosePET`.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        drf_range: Sequence[float] | None = (8.0, 20.0),
        task_key: str | None = "task",
        task: str = "pet",
        window: str | Sequence[float] | None = None,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        transform = None if drf_range is None else RandLowDosePET(drf_range, **kwargs)
        super().__init__(keys, transform, task, task_key, window, allow_missing_keys)

    def degrade(self, hq: NdarrayOrTensor, d: Mapping[Hashable, Any]) -> NdarrayOrTensor:
        """HQ -> LQ, same units."""
        return self.transform(hq, randomize=False)
