"""Degradations (MRI k-space truncation, low-dose CT and PET simulation) and intensity windows as MONAI transforms."""

from .ct_dose import MU_WATER_70KEV, SimulateLowDoseCT, SimulateLowDoseCTd, ct_noise_variance
from .intensity import (
    AIR_HU,
    CT_METRIC_WINDOW,
    MODALITY_WINDOWS,
    IntensityWindow,
    IntensityWindowd,
    dicom_to_hu,
    get_window,
)
from .kspace import KSpaceCrop, KSpaceCropd, kspace_truncate, kspace_window
from .pet_dose import SimulateLowDosePET, SimulateLowDosePETd, osem, suv_from_dicom, thin_counts

__all__ = [
    "AIR_HU",
    "CT_METRIC_WINDOW",
    "MODALITY_WINDOWS",
    "MU_WATER_70KEV",
    "IntensityWindow",
    "IntensityWindowd",
    "KSpaceCrop",
    "KSpaceCropd",
    "SimulateLowDoseCT",
    "SimulateLowDoseCTd",
    "SimulateLowDosePET",
    "SimulateLowDosePETd",
    "ct_noise_variance",
    "dicom_to_hu",
    "get_window",
    "kspace_truncate",
    "kspace_window",
    "osem",
    "suv_from_dicom",
    "thin_counts",
]
