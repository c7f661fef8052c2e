"""Degradations (MRI k-space truncation, low-dose CT and PET simulation), MRI k-space zero-filling and intensity
windows as MONAI transforms."""

from .ct_dose import (
    AEC_REFERENCE_DIAMETER_CM,
    KERNEL_RESOLUTION_CM,
    MU_WATER_70KEV,
    SimulateLowDoseCT,
    SimulateLowDoseCTd,
    ct_noise_variance,
    ct_simulation_args,
    water_equivalent_diameter_cm,
)
from .intensity import (
    AIR_HU,
    CT_METRIC_WINDOW,
    MODALITY_WINDOWS,
    IntensityWindow,
    IntensityWindowd,
    dicom_to_hu,
    get_window,
)
from .kspace import (
    KSpaceCrop,
    KSpaceCropd,
    KSpaceZeroFill,
    KSpaceZeroFilld,
    kspace_truncate,
    kspace_window,
    kspace_zero_fill,
    zero_fill_affine,
)
from .pet_dose import SimulateLowDosePET, SimulateLowDosePETd, osem, suv_from_dicom, thin_counts
from .pixel_size import RandPixelSized
from .random_dose import NoiseBank, RandLowDoseCT, RandLowDosePET
from .random_dose_dict import RandLowDoseCTd, RandLowDosePETd

__all__ = [
    "AIR_HU",
    "CT_METRIC_WINDOW",
    "MODALITY_WINDOWS",
    "AEC_REFERENCE_DIAMETER_CM",
    "KERNEL_RESOLUTION_CM",
    "MU_WATER_70KEV",
    "IntensityWindow",
    "IntensityWindowd",
    "KSpaceCrop",
    "KSpaceCropd",
    "KSpaceZeroFill",
    "KSpaceZeroFilld",
    "NoiseBank",
    "RandLowDoseCT",
    "RandLowDoseCTd",
    "RandLowDosePET",
    "RandLowDosePETd",
    "RandPixelSized",
    "SimulateLowDoseCT",
    "SimulateLowDoseCTd",
    "SimulateLowDosePET",
    "SimulateLowDosePETd",
    "ct_noise_variance",
    "ct_simulation_args",
    "water_equivalent_diameter_cm",
    "dicom_to_hu",
    "get_window",
    "kspace_truncate",
    "kspace_window",
    "kspace_zero_fill",
    "osem",
    "suv_from_dicom",
    "thin_counts",
    "zero_fill_affine",
]
