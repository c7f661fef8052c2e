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

CT label noise (``label_noise_range``): the clean-looking full-dose slices of a corpus teach a network to remove
all noise, while a real full-dose scan keeps its own, which its lower-dose version (and a noise insertion into it)
keeps too. Two orthogonal weight vectors combine the same bank into two independent realisations: one, scaled to
a drawn fraction of the full-dose noise, goes into the label and the input, the other, the dose noise, into the
input only.

The bank is seeded from the slice's content (and ``bank_seed``), so it does not depend on the order items come in;
the per-call level and weights come from the transform's random state (``set_random_state``, MONAI's
``set_determinism``).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from monai.config import NdarrayOrTensor
from monai.transforms import Randomizable, Transform
from monai.utils import TransformBackends

from ._common import check_channel_first, like_input, to_numpy
from .ct_dose import AEC_REFERENCE_DIAMETER_CM, KERNEL_RESOLUTION_CM, SimulateLowDoseCT
from .pet_dose import SimulateLowDosePET

__all__ = ["NoiseBank", "RandLowDoseCT", "RandLowDosePET"]


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

    def _bank(self, img: NdarrayOrTensor, params: tuple, simulate: Callable) -> tuple[np.ndarray, np.ndarray]:
        check_channel_first(img, self.name, spatial_ndims=(2,))
        x = to_numpy(img, np.float32)[0]
        return x, self.bank.get(x, params, simulate)

    @staticmethod
    def _combine(bank: np.ndarray, weights: np.ndarray, scale: float) -> np.ndarray:
        unit = weights / max(float(np.linalg.norm(weights)), 1e-12)
        return np.tensordot(unit.astype(np.float32), bank, axes=1) * np.float32(scale)


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
        label_noise_range: ``(low, high)``: the full-dose slice is first given full-dose noise of its own, its
            variance this fraction (drawn uniformly) of the simulation's full-dose noise variance (see
            :meth:`pair`); None: the input is taken as the full-dose image as it is.
        kwargs: other :class:`~scripts.transforms.SimulateLowDoseCT` arguments (``pixel_size_cm``, ``i0``,
            ``input_dose_fraction``, ``circle``, ...; not ``dose_fraction`` or ``seed``). ``circle`` is used only
            for square slices without a body diameter.

    Raises:
        ValueError: a range outside ``(0, input_dose_fraction]``, a negative label noise range or one with a
            noiseless input (``input_dose_fraction=None``), or a bad simulator argument.
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
        label_noise_range: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        self.label_noise_range = None if label_noise_range is None else tuple(float(v) for v in label_noise_range)
        self.label_noise = 0.0
        self._label_weights = np.zeros(bank_size)
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
        if self.label_noise_range is not None:
            low, high = self.label_noise_range
            if not 0.0 <= low <= high or self.input_dose is None:
                raise ValueError(
                    f"RandLowDoseCT: label_noise_range must be (low, high) with 0 <= low <= high and needs a noisy "
                    f"input (input_dose_fraction not None), got {self.label_noise_range} and {self.input_dose}."
                )

    def randomize(self, data: object = None) -> None:
        """Draw the dose, the label noise fraction and the combination weights of the next call."""
        super().randomize(data)
        if self.label_noise_range is None:
            return
        self.label_noise = float(self.R.uniform(*self.label_noise_range))
        # weights orthogonal to the LQ noise's: the two combinations of the bank are independent noise realisations
        other, lq = self.R.standard_normal(self.bank.size), self._weights
        self._label_weights = other - lq * (other @ lq) / max(float(lq @ lq), 1e-12)

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
            The lower-dose slice in HU (of the input as given plus the label noise, if any: see :meth:`pair`).
        """
        return self.pair(img, pixel_size_cm, body_diameter_cm, randomize)[1]

    def pair(
        self,
        img: NdarrayOrTensor,
        pixel_size_cm: float | None = None,
        body_diameter_cm: float | None = None,
        randomize: bool = True,
    ) -> tuple[NdarrayOrTensor, NdarrayOrTensor]:
        """The training pair of a full-dose slice: (full-dose label, lower-dose input).

        With ``label_noise_range`` the label gets full-dose noise of a drawn level first, independent of the noise
        then added to it for the lower dose (why: the module docstring).

        Args: as for ``__call__``.

        Returns:
            ``(label, lq)`` in HU, both ``(1, H, W)`` like the input; the label is the input itself without
            ``label_noise_range``.
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
        reference = self._inserted_variance(self.reference_dose)
        params = (self.reference_dose, tuple(sorted(kwargs.items())))
        x, bank = self._bank(img, params, simulate)
        lq = x + self._combine(bank, self._weights, math.sqrt(self._inserted_variance(self.level) / reference))
        if self.label_noise_range is None:
            return img, like_input(lq[None], img)
        # full-dose noise (variance 1 / input dose in the units of the inserted variance), scaled by the draw
        scale = math.sqrt(self.label_noise / float(self.input_dose) / reference)
        label_noise = self._combine(bank, self._label_weights, scale)
        return like_input((x + label_noise)[None], img), like_input((lq + label_noise)[None], img)


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
        x, bank = self._bank(img, (self.reference_drf,), self._simulate)
        return like_input(np.maximum(x + self._combine(bank, self._weights, scale), 0.0)[None], img)
