"""Low-dose PET by simulation from a full-dose image, and the SUV (body weight) factor of a PET DICOM.

Simulation (2-D, attenuation-free: no attenuation, scatter, randoms or normalisation model, which
is acceptable for producing the noise of a lower count level): the activity image is forward
projected (``skimage.transform.radon``), scaled so that the full-dose sinogram holds
``total_counts`` expected counts, drawn as Poisson counts, thinned by binomial sampling with
probability 1 / DRF (what list-mode decimation does to the events), reconstructed by OSEM with a
sensitivity image (radon / unfiltered ``iradon`` as projector pair) inside the image's support,
Gaussian post-filtered and converted back to the input's units by the known count scale, so the
mean activity is preserved in expectation (not forced).

``total_counts`` default (6e6 per slice): chosen so that a uniform region of a body-sized phantom
(192 x 400) at the default reconstruction settings has a coefficient of variation of ~10 % at full
dose, our assumption of a typical clinical full-dose FDG noise level, not a cited figure (measured:
10 % at full dose, 21 % at DRF 4, 39 % at DRF 12). It is per slice: a slice with little activity
gets the same counts as a bright one (a simplification).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Hashable
from typing import Any

import numpy as np
import pydicom
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import Randomizable, Transform
from monai.utils import TransformBackends
from scipy.ndimage import gaussian_filter

from . import _tomo
from ._common import SeededSimulationd, check_channel_first, like_input, to_numpy

__all__ = ["SimulateLowDosePET", "SimulateLowDosePETd", "osem", "suv_from_dicom", "thin_counts"]

#: FWHM = 2 sqrt(2 ln 2) sigma.
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def thin_counts(counts: np.ndarray, drf: float, rng: np.random.Generator | np.random.RandomState) -> np.ndarray:
    """Keep each count independently with probability 1 / DRF (binomial thinning, as list-mode decimation).

    Args:
        counts: non-negative integer counts (any shape).
        drf: dose reduction factor, >= 1.
        rng: numpy random generator (``np.random.Generator`` or ``RandomState``).

    Returns:
        The thinned counts, int64, same shape; their expectation is ``counts / drf``.

    Raises:
        ValueError: ``drf < 1``, or counts that are negative or not integers.
    """
    if not drf >= 1.0:
        raise ValueError(f"thin_counts: drf must be >= 1, got {drf}.")
    counts = np.asarray(counts)
    if counts.size and (counts.min() < 0 or not np.array_equal(counts, np.round(counts))):
        raise ValueError("thin_counts: counts must be non-negative integers.")
    return rng.binomial(counts.astype(np.int64), 1.0 / drf).astype(np.int64)


def osem(counts: np.ndarray, theta: np.ndarray, support: np.ndarray, iterations: int, subsets: int) -> np.ndarray:
    """Ordered-subsets expectation maximisation (Hudson & Larkin 1994) with skimage's radon / iradon.

    ``x <- x / s_b * A_b^T (y_b / A_b x)`` for each subset ``b`` of interleaved angles, with the
    sensitivity ``s_b = A_b^T 1``; ``A`` is ``radon``, ``A^T`` the unfiltered ``iradon`` (whose
    constant scale cancels in the ratio). Starting from a constant inside ``support`` (zero outside),
    the estimate stays zero outside it.

    Args:
        counts: (S, len(theta)) measured counts.
        theta: projection angles in degrees.
        support: (S, S) boolean mask of the pixels to reconstruct.
        iterations: passes over all subsets.
        subsets: number of subsets (angles ``theta[b::subsets]``).

    Returns:
        (S, S) activity estimate in counts per pixel (so that ``radon(x)`` fits ``counts``).
    """
    size = support.shape[0]
    y = counts.astype(np.float64)
    x = np.zeros((size, size))
    x[support] = y.sum() / (len(theta) * max(int(support.sum()), 1))
    blocks = [np.arange(b, len(theta), subsets) for b in range(subsets)]
    sens = [np.where(support, _tomo.backproject(np.ones((size, len(b))), theta[b], size), 0.0) for b in blocks]
    for _ in range(iterations):
        for b, s in zip(blocks, sens, strict=True):
            expected = _tomo.forward(x, theta[b])
            ratio = np.divide(y[:, b], expected, out=np.zeros_like(expected), where=expected > 1e-12)
            update = _tomo.backproject(ratio, theta[b], size)
            x = np.divide(x * update, s, out=np.zeros_like(x), where=s > 1e-12)
    return x


class SimulateLowDosePET(Randomizable, Transform):
    """Simulate a low-dose PET slice (dose reduced by ``drf``) from a full-dose one; same units in and out.

    See the module docstring for the method and its assumptions. Shapes: ``(1, H, W)`` (e.g. a
    192 x 400 coronal slice of a whole-body volume), or ``(1, H, W, D)`` whose D slices are simulated
    independently. Negative input values (interpolation undershoot) are treated as zero activity.
    An all-zero slice comes back as zeros. Output float32, same kind (numpy / torch) as the input.

    Note the result is a re-reconstruction, slightly smoother than the input (projector interpolation,
    the iterations, the post-filter). For pairs of matched resolution use :meth:`simulate_pair`,
    which also reconstructs the full-dose counts the low-dose ones were thinned from.

    Args:
        drf: dose reduction factor, >= 1 (12 in the AMIR paper).
        total_counts: expected counts in the full-dose sinogram of one slice (see module docstring).
        num_angles: projection angles over 180 degrees (128 keeps a 192 x 400 slice at ~1.5 s; the
            post-filtered PET resolution needs no finer sampling).
        iterations: OSEM iterations (3 x 8 subsets = 24 updates, the order of a clinical OSEM's).
        subsets: OSEM subsets (``num_angles`` is split into interleaved subsets).
        post_filter_fwhm_px: FWHM, in pixels, of the Gaussian post-filter (0 for none). The default 1 px
            is below the clinical 4-6 mm (1.1-1.6 px at ~3.6 mm pixels) as the input is already filtered once.
        seed: seed of the random state (or call ``set_random_state``).

    Raises:
        ValueError: invalid parameter, or an input of the wrong shape.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(
        self,
        drf: float = 12.0,
        total_counts: float = 6.0e6,
        num_angles: int = 128,
        iterations: int = 3,
        subsets: int = 8,
        post_filter_fwhm_px: float = 1.0,
        seed: int | None = None,
    ) -> None:
        if not drf >= 1.0:
            raise ValueError(f"SimulateLowDosePET: drf must be >= 1, got {drf}.")
        if not total_counts > 0:
            raise ValueError(f"SimulateLowDosePET: total_counts must be positive, got {total_counts}.")
        if min(int(num_angles), int(iterations), int(subsets)) < 1 or int(subsets) > int(num_angles):
            raise ValueError("SimulateLowDosePET: need num_angles >= subsets >= 1 and iterations >= 1.")
        if post_filter_fwhm_px < 0:
            raise ValueError(f"SimulateLowDosePET: post_filter_fwhm_px must be >= 0, got {post_filter_fwhm_px}.")
        self.drf = float(drf)
        self.total_counts = float(total_counts)
        self.theta = _tomo.angles(num_angles)
        self.iterations = int(iterations)
        self.subsets = int(subsets)
        self.post_filter_fwhm_px = float(post_filter_fwhm_px)
        self._seed = 0
        self.set_random_state(seed)

    def randomize(self, data: object = None) -> None:
        """Draw the seed of the next noise realisation from the transform's random state."""
        self._seed = int(self.R.randint(2**31 - 1))

    def _reconstruct(self, counts: np.ndarray, support: np.ndarray, crop: tuple[slice, slice]) -> np.ndarray:
        """OSEM + post-filter, cropped to the input's grid (counts per pixel)."""
        recon = osem(counts, self.theta, support, self.iterations, self.subsets)[crop]
        if self.post_filter_fwhm_px > 0:
            # 'reflect' keeps the image's total activity
            recon = gaussian_filter(recon, self.post_filter_fwhm_px / _FWHM_PER_SIGMA, mode="reflect")
        return recon

    def _slice(self, activity: np.ndarray, rng: np.random.Generator, full: bool) -> tuple[np.ndarray, np.ndarray]:
        """Low-dose (and, if ``full``, full-dose; else zeros) reconstructions of one (H, W) slice."""
        activity = np.clip(activity, 0.0, None)
        grid, crop = _tomo.embed_in_circle(activity)
        sino = np.clip(_tomo.forward(grid, self.theta), 0.0, None)
        if sino.sum() <= 0:
            return np.zeros_like(activity), np.zeros_like(activity)
        counts_per_unit = self.total_counts / sino.sum()
        counts = rng.poisson(sino * counts_per_unit)
        support = np.zeros(grid.shape, dtype=bool)
        support[crop] = True
        low = self._reconstruct(thin_counts(counts, self.drf, rng), support, crop) * (self.drf / counts_per_unit)
        high = self._reconstruct(counts, support, crop) / counts_per_unit if full else np.zeros_like(activity)
        return low, high

    def _run(self, img: NdarrayOrTensor, randomize: bool, full: bool) -> tuple[NdarrayOrTensor, NdarrayOrTensor]:
        check_channel_first(img, "SimulateLowDosePET")
        if randomize:
            self.randomize()
        x = to_numpy(img)
        rng = np.random.default_rng(self._seed)
        low, high = np.zeros_like(x), np.zeros_like(x)
        if x.ndim == 3:
            low[0], high[0] = self._slice(x[0], rng, full)
        else:
            for z in range(x.shape[-1]):
                low[0, ..., z], high[0, ..., z] = self._slice(x[0, ..., z], rng, full)
        return like_input(low, img), like_input(high, img)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """
        Args:
            img: full-dose activity (SUV or kBq/ml), (1, H, W) or (1, H, W, D), numpy or torch.
            randomize: draw a new noise realisation (False repeats the last one).

        Returns:
            The simulated low-dose image, float32, same units, kind and shape as ``img``.
        """
        return self._run(img, randomize, full=False)[0]

    def simulate_pair(self, img: NdarrayOrTensor, randomize: bool = True) -> tuple[NdarrayOrTensor, NdarrayOrTensor]:
        """Low-dose and full-dose reconstructions from the same full-dose counts (thinned for the low dose).

        Both go through the same projector, OSEM and post-filter, so they have matched resolution,
        like a pair reconstructed from a list-mode acquisition and its decimation.

        Args:
            img: full-dose activity, as for ``__call__``.
            randomize: draw a new noise realisation.

        Returns:
            ``(low_dose, full_dose)``, each like the output of ``__call__``.
        """
        return self._run(img, randomize, full=True)


class SimulateLowDosePETd(SeededSimulationd):
    """Dictionary version of :class:`SimulateLowDosePET`.

    One seed is drawn per call and shared by all ``keys`` (MONAI's convention); normally one key.

    Args:
        keys: keys of the full-dose PET images to replace by simulated low-dose ones.
        full_dose_key: if given (one key only), the matched full-dose reconstruction of
            :meth:`SimulateLowDosePET.simulate_pair` is stored under this key (twice the cost).
        allow_missing_keys: do not raise if a key is missing.
        kwargs: the arguments of :class:`SimulateLowDosePET` (``drf``, ``total_counts``, ..., ``seed``).

    Raises:
        ValueError: ``full_dose_key`` with more than one key.
    """

    backend = SimulateLowDosePET.backend

    def __init__(
        self, keys: KeysCollection, full_dose_key: str | None = None, allow_missing_keys: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(keys, SimulateLowDosePET(**kwargs), allow_missing_keys)
        if full_dose_key is not None and len(self.keys) != 1:
            raise ValueError("SimulateLowDosePETd: full_dose_key needs exactly one key.")
        self.full_dose_key = full_dose_key

    def simulate(self, d: dict[Hashable, NdarrayOrTensor], key: Hashable) -> None:
        """Replace ``d[key]`` by the low-dose image, and store the full-dose reconstruction if asked."""
        if self.full_dose_key is None:
            super().simulate(d, key)
        else:
            d[key], d[self.full_dose_key] = self.simulator.simulate_pair(d[key], randomize=False)


# ---------------------------------------------------------------- SUV


def _parse_time(value: Any, tag: str) -> datetime.time:
    """A DICOM TM (``HHMMSS.FFFFFF``, shorter forms, or the old ``HH:MM:SS``) as a ``datetime.time``."""
    if isinstance(value, datetime.datetime):
        return value.time()
    if isinstance(value, datetime.time):
        return value
    text = str(value).strip().replace(":", "")
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (frac and not frac.isdigit()):
        raise ValueError(f"suv_from_dicom: cannot parse {tag} {value!r} as a DICOM time.")
    h, m, s = int(whole[0:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    micro = int((frac + "000000")[:6]) if frac else 0
    return datetime.time(h, m, min(s, 59), micro)


def _parse_date(value: Any) -> datetime.date | None:
    """A DICOM DA (``YYYYMMDD``) as a ``datetime.date``, None if empty or unparseable."""
    if isinstance(value, datetime.date):
        return value
    text = str(value).strip()
    if len(text) == 8 and text.isdigit():
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    return None


def _parse_datetime(value: Any, tag: str) -> datetime.datetime:
    """A DICOM DT (``YYYYMMDDHHMMSS.FFFFFF&ZZXX``, UTC offset ignored) as a naive ``datetime``."""
    if isinstance(value, datetime.datetime):
        return value.replace(tzinfo=None)
    text = str(value).strip().split("+")[0].split("-")[0]
    date = _parse_date(text[:8])
    if date is None or len(text) < 10:
        raise ValueError(f"suv_from_dicom: cannot parse {tag} {value!r} as a DICOM date-time.")
    return datetime.datetime.combine(date, _parse_time(text[8:], tag))


def _require(ds: pydicom.Dataset, tag: str, where: str = "") -> Any:
    if tag not in ds or ds[tag].value in (None, ""):
        raise ValueError(f"suv_from_dicom: the dataset has no {tag}{where}, needed for SUV.")
    return ds[tag].value


def suv_from_dicom(ds: pydicom.Dataset) -> float:
    """Factor that converts a PET slice in Bq/ml to SUV body weight: ``SUV = pixel_Bq_per_ml * factor``.

    ``factor = PatientWeight [g] / injected dose [Bq] decayed to the scan start`` (1 ml of tissue
    taken as 1 g). The pixel values must already be in Bq/ml (RescaleSlope applied).

    - ``Units`` must be "BQML".
    - Dose, half-life and injection time from ``RadiopharmaceuticalInformationSequence[0]``
      (``RadionuclideTotalDose``, ``RadionuclideHalfLife``, ``RadiopharmaceuticalStartDateTime``
      or else ``RadiopharmaceuticalStartTime``).
    - Scan start: the earlier of ``SeriesTime`` and ``AcquisitionTime`` (QIBA's rule for one slice:
      the series time unless post-processing moved it after the acquisition), with ``SeriesDate`` /
      ``AcquisitionDate`` when an injection date-time is known. Without dates, an injection time
      after the scan time is taken to be on the day before (scan past midnight).
    - ``DecayCorrection`` "START": the dose is decayed to the scan start; "ADMIN": the images are
      already corrected to the injection time, no decay. Anything else ("NONE") is refused.

    Args:
        ds: a PET DICOM dataset (header only is enough).

    Returns:
        The SUV factor, in g/Bq (ml/Bq).

    Raises:
        ValueError: a missing or invalid tag, named in the message.
    """
    units = str(_require(ds, "Units")).strip().upper()
    if units != "BQML":
        raise ValueError(f"suv_from_dicom: Units must be 'BQML' for SUV, got {units!r}.")
    weight_kg = float(_require(ds, "PatientWeight"))
    if not weight_kg > 0:
        raise ValueError(f"suv_from_dicom: PatientWeight must be positive, got {weight_kg}.")
    seq = _require(ds, "RadiopharmaceuticalInformationSequence")
    if len(seq) == 0:
        raise ValueError("suv_from_dicom: RadiopharmaceuticalInformationSequence is empty.")
    info, where = seq[0], " in RadiopharmaceuticalInformationSequence[0]"
    dose = float(_require(info, "RadionuclideTotalDose", where))
    half_life = float(_require(info, "RadionuclideHalfLife", where))
    if not (dose > 0 and half_life > 0):
        raise ValueError("suv_from_dicom: RadionuclideTotalDose and RadionuclideHalfLife must be positive.")
    correction = str(_require(ds, "DecayCorrection")).strip().upper()
    if correction == "ADMIN":
        return weight_kg * 1000.0 / dose
    if correction != "START":
        raise ValueError(f"suv_from_dicom: DecayCorrection {correction!r} is not supported (START or ADMIN).")

    starts = [(_parse_time(ds[t].value, t), t) for t in ("SeriesTime", "AcquisitionTime") if ds.get(t)]
    if not starts:
        raise ValueError("suv_from_dicom: the dataset has no SeriesTime or AcquisitionTime, needed for SUV.")
    scan_time, scan_tag = min(starts)
    date_tag = "SeriesDate" if scan_tag == "SeriesTime" else "AcquisitionDate"
    scan_date = _parse_date(ds.get(date_tag, "") or ds.get("SeriesDate", "") or ds.get("AcquisitionDate", ""))

    if info.get("RadiopharmaceuticalStartDateTime") and scan_date is not None:
        injection = _parse_datetime(info.RadiopharmaceuticalStartDateTime, "RadiopharmaceuticalStartDateTime")
        elapsed = (datetime.datetime.combine(scan_date, scan_time) - injection).total_seconds()
    else:
        if info.get("RadiopharmaceuticalStartDateTime"):
            dt = _parse_datetime(info.RadiopharmaceuticalStartDateTime, "RadiopharmaceuticalStartDateTime")
            inj_time = dt.time()
        elif info.get("RadiopharmaceuticalStartTime"):
            inj_time = _parse_time(info.RadiopharmaceuticalStartTime, "RadiopharmaceuticalStartTime")
        else:
            raise ValueError(
                "suv_from_dicom: the dataset has no RadiopharmaceuticalStartDateTime or RadiopharmaceuticalStartTime"
                f"{where}, needed for SUV."
            )
        day = datetime.date(2000, 1, 1)
        elapsed = (datetime.datetime.combine(day, scan_time) - datetime.datetime.combine(day, inj_time)).total_seconds()
        if elapsed < 0:
            elapsed += 86400.0
    if elapsed < 0:
        raise ValueError(f"suv_from_dicom: the injection is {-elapsed:.0f} s after the scan start.")
    decayed_dose = dose * math.exp(-math.log(2.0) * elapsed / half_life)
    return weight_kg * 1000.0 / decayed_dose
