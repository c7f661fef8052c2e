"""Low-dose CT simulation from a full-dose slice in HU: projection-domain noise insertion, FBP of the noise.

Method (noise insertion in the spirit of Yu et al. 2012, J Comput Assist Tomogr 36:477, and Zeng et
al. 2015, IEEE Trans Nucl Sci 62:2226): the input is a real full-dose scan that already carries
the noise of its own dose, so only the *extra* noise of the lower dose is added.

1. HU -> linear attenuation ``mu = mu_water (1 + HU / 1000)``, clipped at 0, times the pixel size:
   line integrals ``p`` of a parallel-beam sinogram (``skimage.transform.radon``).
2. Transmitted counts at the simulated dose ``a``: ``N = Poisson(I0 a exp(-p)) + Normal(0, sigma_e)``,
   non-positive counts floored at one count, ``p_a = -log(N / (I0 a))``; the noise is ``p_a - p``.
3. Its post-log variance is ``v(a) = exp(p) / (I0 a) + sigma_e^2 exp(2p) / (I0 a)^2``. The input
   already holds ``v(r)`` (``r = input_dose_fraction``, 1 for a full-dose scan), so the noise is
   scaled per ray by ``sqrt(1 - v(r) / v(a))``: input + insertion then has the variance ``v(a)``
   of a scan at dose ``a``. ``input_dose_fraction=None`` declares a noiseless input (a phantom) and
   inserts the whole ``v(a)``.
4. The noise sinogram is reconstructed by FBP (ramp filter, ``skimage.transform.iradon``),
   converted to HU and added to the input. FBP is linear, so this equals
   ``input + FBP(noisy sinogram) - FBP(clean sinogram)``: the blur and discretisation error of
   projection + FBP cancel and the signal is the input's, untouched.

Calibration: ``I0`` is an effective count per ray of this 2-D geometry, not a detector count. It
was set so that a noiseless 30 cm water disk simulated at full dose with the defaults (512 x 512,
0.07 cm pixels, 720 views) has ~11 HU standard deviation in a 3.5 cm radius centre ROI (measured
10.7-10.9 HU over three seeds; quarter dose 2.01-2.07 times that), the order of the full-dose noise of
the Mayo 1 mm B30 images (about 10-12 HU in the liver, about twice that at quarter dose). That
level was given to us as a typical figure; it was not measured on the Mayo data here. The noise
texture is that of a plain ramp filter, finer-grained than a B30 kernel's.

A targeted reconstruction (a field of view smaller than the body, e.g. a 15 cm view of the spine) holds only
part of the attenuation its rays crossed: ``body_diameter_cm`` embeds it in a water disk of the body's size
(water in the grid around the image, the rest of the disk added analytically to every ray), so the noise
has the level of the whole body's paths instead of the crop's.

Automatic exposure control: a scanner does not give every patient the same tube output. With a fixed noise index
(GE's AutomA; Siemens' CARE Dose4D lets the noise grow somewhat with size) the output follows the patient's
attenuation, so a head and an abdomen come out at similar noise. ``aec_reference_diameter_cm`` models that: the
count per ray is scaled by ``exp(mu_water (D_w - D_ref))``, where ``D_w`` is the slice's water-equivalent diameter
(AAPM TG-220: ``2 sqrt(A_w / pi)``, ``A_w`` the area weighted by ``1 + HU / 1000``; the body's diameter for a
targeted view), so the centre of every slice gets the noise of a ``D_ref`` water disk (~11 HU at full dose for 30 cm).
Without it, a 16 cm head at the calibrated output gets a quarter of the abdomen's noise std.

Pixels finer than the reconstruction kernel resolves: with a ramp filter up to the pixel's Nyquist frequency the
noise std grows as ``pixel_size^-1.5``, but a clinical smooth kernel (B30, STANDARD) resolves no finer than about
0.7 mm, so a 0.3 mm pixel of a targeted view holds about the noise of a 0.7 mm one. ``kernel_resolution_cm``
simulates the noise of such a slice on a grid of that pixel size and interpolates it (cubic) to the slice's grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import Randomizable, Transform
from monai.utils import TransformBackends
from skimage.transform import rescale, resize

from . import _tomo
from ._common import SeededSimulationd, check_channel_first, like_input, to_numpy

__all__ = [
    "AEC_REFERENCE_DIAMETER_CM",
    "KERNEL_RESOLUTION_CM",
    "MU_WATER_70KEV",
    "SimulateLowDoseCT",
    "SimulateLowDoseCTd",
    "ct_noise_variance",
    "ct_simulation_args",
    "water_equivalent_diameter_cm",
]

#: Linear attenuation of water at 70 keV, cm^-1: NIST XCOM mass attenuation (with coherent scattering)
#: 0.2059 cm^2/g at 60 keV and 0.1837 at 80 keV, log-log interpolated to 70 keV, density 1 g/cm^3.
MU_WATER_70KEV: float = 0.1937

#: Geometry the calibration refers to (see ``SimulateLowDoseCT``'s ``i0``).
REFERENCE_PIXEL_CM: float = 0.07
REFERENCE_NUM_ANGLES: int = 720

#: Incident count per ray at full dose (reference geometry), calibrated for ~11 HU in a 30 cm water disk
#: (module docstring); the std scales as 1 / sqrt(I0).
DEFAULT_I0: float = 8.0e6

#: Finest detail a B30-like kernel resolves (cm), the ``kernel_resolution_cm`` of real slices with finer pixels.
KERNEL_RESOLUTION_CM: float = 0.07

#: Water-equivalent diameter whose noise automatic exposure control holds (cm): the calibration's water disk.
AEC_REFERENCE_DIAMETER_CM: float = 30.0

#: Electronic noise std in the same effective count units. Its variance (100) is 0.4 % of the quantum variance
#: behind 30 cm of water at full dose (~2.4e4 counts) and 1.6 % at quarter dose, so the quarter / full noise
#: ratio stays ~2 as in the Mayo data; it dominates only photon-starved rays (p > ~10 at quarter dose).
DEFAULT_ELECTRONIC_NOISE_STD: float = 10.0


def water_equivalent_diameter_cm(hu: np.ndarray, pixel_size_cm: float) -> float:
    """Water-equivalent diameter of a CT slice (AAPM TG-220): ``2 sqrt(A_w / pi)``, ``A_w = sum (1 + HU/1000) dA``.

    Args:
        hu: the slice in HU (air, at -1000, adds nothing).
        pixel_size_cm: its pixel size.

    Returns:
        The diameter in cm.
    """
    area = float(np.clip(1.0 + np.asarray(hu, dtype=np.float64) / 1000.0, 0.0, None).sum()) * pixel_size_cm**2
    return 2.0 * float(np.sqrt(area / np.pi))


def ct_simulation_args(shape: Sequence[int], spacing_mm: float, body_diameter_cm: float | None) -> dict[str, Any]:
    """The :class:`SimulateLowDoseCT` arguments of a real slice (besides dose and seed), as the corpus builds them.

    Its pixel size, the noise of a B30-like kernel (:data:`KERNEL_RESOLUTION_CM`), automatic exposure control
    (:data:`AEC_REFERENCE_DIAMETER_CM`), and, for a targeted view, the body around it.

    Args:
        shape: the slice's ``(H, W)``.
        spacing_mm: its pixel size, mm.
        body_diameter_cm: the body's diameter for a targeted view, None for a slice that holds the whole body.
    """
    return {
        "pixel_size_cm": float(spacing_mm) / 10.0,
        "circle": shape[0] == shape[1] and body_diameter_cm is None,
        "body_diameter_cm": body_diameter_cm,
        "kernel_resolution_cm": KERNEL_RESOLUTION_CM,
        "aec_reference_diameter_cm": AEC_REFERENCE_DIAMETER_CM,
    }


def ct_noise_variance(p: np.ndarray, i0: float, dose_fraction: float, electronic_noise_std: float) -> np.ndarray:
    """Post-log variance of a CT ray with line integral ``p`` (first-order, Poisson + Gaussian electronic noise).

    Args:
        p: line integrals (dimensionless).
        i0: incident counts per ray at full dose.
        dose_fraction: dose relative to full dose.
        electronic_noise_std: std of the electronic noise, in counts.

    Returns:
        ``exp(p) / (I0 a) + sigma_e^2 exp(2p) / (I0 a)^2``.
    """
    inv_counts = np.exp(p) / (i0 * dose_fraction)
    return inv_counts + (electronic_noise_std * inv_counts) ** 2


class SimulateLowDoseCT(Randomizable, Transform):
    """Simulate a lower-dose CT slice from a full-dose one (HU in, HU out) by projection-domain noise insertion.

    See the module docstring for the method. Shapes: ``(1, H, W)``, or ``(1, H, W, D)`` whose D
    slices are simulated independently. Output float32, same kind (numpy / torch) as the input.

    Geometry: 2-D parallel beam over 180 degrees, detector bins one pixel wide. ``num_angles=720``
    samples the angles finely enough (R * dtheta <= 1 pixel) out to a radius of 720 / pi = 229 pixels,
    the whole 512 x 512 field of view. With ``circle=True`` the attenuation outside the image's
    inscribed circle is treated as air and no noise is added there, like the scanner's circular
    reconstruction field of view (Mayo slices are padded outside it; needs a square image); with
    ``circle=False`` the whole image is embedded in a larger grid (slower), which
    ``body_diameter_cm`` then fills with water (see the module docstring).

    Args:
        dose_fraction: simulated dose relative to full dose, in (0, 1] (0.25 = Mayo quarter dose).
        i0: incident counts per ray at full dose for the reference geometry (0.07 cm bins, 720 views;
            calibrated, see the module docstring). The count per ray used is ``effective_i0 =
            i0 * (pixel_size_cm / 0.07) * (720 / num_angles)``: the fluence per cm and per rotation is
            fixed, so fewer views do not change the image noise, and the noise scales with the pixel size
            as in a scanner (std ~ pixel_size^-1.5).
        electronic_noise_std: Gaussian electronic noise std, in counts.
        num_angles: number of projection angles over 180 degrees.
        mu_water: linear attenuation of water, cm^-1 (default: 70 keV, ``MU_WATER_70KEV``).
        pixel_size_cm: in-plane pixel size, cm (0.07 cm: ~360 mm Mayo field of view / 512).
        input_dose_fraction: dose of the input relative to full dose (its noise is kept and only the
            difference is added); None for a noiseless input (the whole noise of ``dose_fraction`` is added).
        circle: restrict to the inscribed circle (see above).
        kernel_resolution_cm: finest detail the reconstruction kernel resolves, cm (0.07 for B30-like kernels):
            a slice with finer pixels gets the noise of this pixel size, interpolated (see the module docstring);
            None: the noise of a ramp filter at the slice's own pixel size.
        body_diameter_cm: diameter of the body the image is a crop of, in cm: the image is centred in a water
            disk of this size (needs ``circle=False``); None: the image holds the whole body.
        aec_reference_diameter_cm: automatic exposure control: the count per ray is scaled by
            ``exp(mu_water (D_w - this))`` with ``D_w`` the slice's water-equivalent diameter (the body's for a
            targeted view), so every slice gets the noise of a water disk of this diameter (module docstring);
            None: the same tube output for every slice.
        projection_downsample: the line integrals that set the noise variance are computed on a grid
            coarser by this factor (16x faster at 4; they enter only through a smooth variance, the
            mean absolute error is ~0.008 on p values up to ~6); 1 for the exact projection.
        seed: seed of the random state (or call ``set_random_state``).

    Raises:
        ValueError: invalid parameter, or an input of the wrong shape.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(
        self,
        dose_fraction: float = 0.25,
        i0: float = DEFAULT_I0,
        electronic_noise_std: float = DEFAULT_ELECTRONIC_NOISE_STD,
        num_angles: int = 720,
        mu_water: float = MU_WATER_70KEV,
        pixel_size_cm: float = 0.07,
        input_dose_fraction: float | None = 1.0,
        circle: bool = True,
        projection_downsample: int = 4,
        body_diameter_cm: float | None = None,
        kernel_resolution_cm: float | None = None,
        aec_reference_diameter_cm: float | None = None,
        seed: int | None = None,
    ) -> None:
        if not 0.0 < dose_fraction <= 1.0:
            raise ValueError(f"SimulateLowDoseCT: dose_fraction must be in (0, 1], got {dose_fraction}.")
        if input_dose_fraction is not None and not dose_fraction <= input_dose_fraction:
            raise ValueError(
                f"SimulateLowDoseCT: dose_fraction ({dose_fraction}) must not exceed input_dose_fraction "
                f"({input_dose_fraction}): noise cannot be removed."
            )
        for name, value in (("i0", i0), ("mu_water", mu_water), ("pixel_size_cm", pixel_size_cm)):
            if not value > 0:
                raise ValueError(f"SimulateLowDoseCT: {name} must be positive, got {value}.")
        if electronic_noise_std < 0:
            raise ValueError(f"SimulateLowDoseCT: electronic_noise_std must be >= 0, got {electronic_noise_std}.")
        if int(num_angles) < 1 or int(projection_downsample) < 1:
            raise ValueError("SimulateLowDoseCT: num_angles and projection_downsample must be >= 1.")
        if body_diameter_cm is not None and (circle or not body_diameter_cm > 0):
            raise ValueError(
                f"SimulateLowDoseCT: body_diameter_cm must be positive and needs circle=False, got {body_diameter_cm}."
            )
        self.dose_fraction = float(dose_fraction)
        self.i0 = float(i0)
        # same fluence per cm and per rotation whatever the discretisation: wider bins and fewer views get more counts
        self.effective_i0 = self.i0 * (pixel_size_cm / REFERENCE_PIXEL_CM) * (REFERENCE_NUM_ANGLES / int(num_angles))
        self.electronic_noise_std = float(electronic_noise_std)
        self.theta = _tomo.angles(num_angles)
        self.mu_water = float(mu_water)
        self.pixel_size_cm = float(pixel_size_cm)
        if kernel_resolution_cm is not None and not kernel_resolution_cm > 0:
            raise ValueError(f"SimulateLowDoseCT: kernel_resolution_cm must be positive, got {kernel_resolution_cm}.")
        self.kernel_resolution_cm = None if kernel_resolution_cm is None else float(kernel_resolution_cm)
        if aec_reference_diameter_cm is not None and not aec_reference_diameter_cm > 0:
            raise ValueError(
                f"SimulateLowDoseCT: aec_reference_diameter_cm must be positive, got {aec_reference_diameter_cm}."
            )
        self.aec_reference_diameter_cm = aec_reference_diameter_cm
        self._init_args = {
            "dose_fraction": dose_fraction, "i0": i0, "electronic_noise_std": electronic_noise_std,
            "num_angles": num_angles, "mu_water": mu_water, "input_dose_fraction": input_dose_fraction,
            "circle": circle, "projection_downsample": projection_downsample, "body_diameter_cm": body_diameter_cm,
            "aec_reference_diameter_cm": aec_reference_diameter_cm,
        }  # fmt: skip
        self.input_dose_fraction = None if input_dose_fraction is None else float(input_dose_fraction)
        self.circle = circle
        self.projection_downsample = int(projection_downsample)
        self.body_diameter_cm = None if body_diameter_cm is None else float(body_diameter_cm)
        self._seed = 0
        self.set_random_state(seed)

    def randomize(self, data: object = None) -> None:
        """Draw the seed of the next noise realisation from the transform's random state."""
        self._seed = int(self.R.randint(2**31 - 1))

    def _slice(self, hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Noise (HU) to add to one (H, W) slice."""
        if self.kernel_resolution_cm is not None and self.pixel_size_cm < self.kernel_resolution_cm:
            # the noise of the kernel's resolution, simulated on a grid of that pixel size and interpolated
            scale = self.pixel_size_cm / self.kernel_resolution_cm
            coarse = rescale(hu, scale, order=1, anti_aliasing=True, preserve_range=True)
            simulator = SimulateLowDoseCT(pixel_size_cm=self.kernel_resolution_cm, **self._init_args)
            return resize(simulator._slice(coarse, rng), hu.shape, order=3, preserve_range=True)
        mu_px = np.clip(self.mu_water * (1.0 + hu / 1000.0), 0.0, None) * self.pixel_size_cm
        if self.circle:
            if hu.shape[0] != hu.shape[1]:
                raise ValueError(f"SimulateLowDoseCT: circle=True needs square slices, got {hu.shape}.")
            inside = _tomo.circle_mask(hu.shape[0])
            mu_px[~inside] = 0.0
            grid, crop = mu_px, (slice(None), slice(None))
        else:
            grid, crop = _tomo.embed_in_circle(mu_px)
        p = _tomo.forward_downsampled(
            grid if self.body_diameter_cm is None else self._in_body(grid, crop), self.theta, self.projection_downsample
        )
        if self.body_diameter_cm is not None:
            p += self._body_beyond_grid(grid.shape[0])[:, None]
        p = np.clip(p, 0.0, None)

        i0 = self.effective_i0 * self.aec_factor(hu)
        lam = i0 * self.dose_fraction * np.exp(-p)
        counts = rng.poisson(lam).astype(np.float64)
        if self.electronic_noise_std > 0:
            counts += rng.normal(0.0, self.electronic_noise_std, size=counts.shape)
        # photon starvation: a non-positive reading has no logarithm; one count is the smallest meaningful one
        noise = -np.log(np.maximum(counts, 1.0) / (i0 * self.dose_fraction)) - p
        if self.input_dose_fraction is not None:
            v_low = ct_noise_variance(p, i0, self.dose_fraction, self.electronic_noise_std)
            v_in = ct_noise_variance(p, i0, self.input_dose_fraction, self.electronic_noise_std)
            noise *= np.sqrt(np.clip(1.0 - v_in / v_low, 0.0, 1.0))
        noise_mu_px = _tomo.fbp(noise, self.theta, grid.shape[0])[crop]
        return noise_mu_px * (1000.0 / (self.mu_water * self.pixel_size_cm))

    def aec_factor(self, hu: np.ndarray) -> float:
        """The tube output of this slice relative to the calibrated one (1 without automatic exposure control)."""
        if self.aec_reference_diameter_cm is None:
            return 1.0
        diameter = self.body_diameter_cm or water_equivalent_diameter_cm(hu, self.pixel_size_cm)
        return float(np.exp(self.mu_water * (diameter - self.aec_reference_diameter_cm)))

    def _body_radius_px(self) -> float:
        return 0.5 * float(self.body_diameter_cm) / self.pixel_size_cm

    def _in_body(self, grid: np.ndarray, crop: tuple[slice, slice]) -> np.ndarray:
        """``grid`` (the image embedded in its circle) with water around the image, inside the body disk."""
        size = grid.shape[0]
        off = np.arange(size) - size // 2
        radius = min(self._body_radius_px(), size // 2)
        around = off[:, None] ** 2 + off[None, :] ** 2 <= radius**2
        around[crop] = False
        out = grid.copy()
        out[around] = self.mu_water * self.pixel_size_cm
        return out

    def _body_beyond_grid(self, size: int) -> np.ndarray:
        """Line integral, per detector bin, of the water of the body disk outside the grid's inscribed circle."""
        t = np.arange(size, dtype=np.float64) - size // 2
        chord = 2.0 * np.sqrt(np.clip(self._body_radius_px() ** 2 - t**2, 0.0, None))
        inside = 2.0 * np.sqrt(np.clip((size // 2) ** 2 - t**2, 0.0, None))
        return self.mu_water * self.pixel_size_cm * np.clip(chord - inside, 0.0, None)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """
        Args:
            img: full-dose CT in HU, (1, H, W) or (1, H, W, D), numpy or torch.
            randomize: draw a new noise realisation (False repeats the last one).

        Returns:
            The simulated lower-dose image in HU, float32, same kind and shape as ``img``.
        """
        check_channel_first(img, "SimulateLowDoseCT")
        if randomize:
            self.randomize()
        hu = to_numpy(img)
        rng = np.random.default_rng(self._seed)
        out = hu.copy()
        if hu.ndim == 3:
            out[0] += self._slice(hu[0], rng)
        else:
            for z in range(hu.shape[-1]):
                out[0, ..., z] += self._slice(hu[0, ..., z], rng)
        return like_input(out, img)


class SimulateLowDoseCTd(SeededSimulationd):
    """Dictionary version of :class:`SimulateLowDoseCT`.

    One seed is drawn per call and shared by all ``keys`` (MONAI's convention for random
    dictionary transforms); normally there is a single key.

    Args:
        keys: keys of the full-dose CT images (HU) to replace by simulated lower-dose ones.
        allow_missing_keys: do not raise if a key is missing.
        kwargs: the arguments of :class:`SimulateLowDoseCT` (``dose_fraction``, ``i0``, ..., ``seed``).
    """

    backend = SimulateLowDoseCT.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs) -> None:
        super().__init__(keys, SimulateLowDoseCT(**kwargs), allow_missing_keys)
