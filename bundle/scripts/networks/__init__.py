"""Networks: AMIR, the Restormer baseline, and the conversion of the authors' released checkpoints."""

from .amir import AMIR, Restormer
from .convert import convert_reference_state_dict
from .presets import DEMO_AMIR, DEMO_RESTORMER, demo_amir, demo_restormer

__all__ = [
    "AMIR",
    "DEMO_AMIR",
    "DEMO_RESTORMER",
    "Restormer",
    "convert_reference_state_dict",
    "demo_amir",
    "demo_restormer",
]
