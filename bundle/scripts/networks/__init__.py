"""Networks: AMIR, the Restormer baseline, and the conversion of the authors' released checkpoints."""

from .amir import AMIR, Restormer
from .convert import convert_reference_state_dict

__all__ = ["AMIR", "Restormer", "convert_reference_state_dict"]
