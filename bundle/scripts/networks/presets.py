"""Named configurations of the networks, so that every config refers to one definition.

``{"_target_": "scripts.networks.demo_amir"}`` in a config is the network of the shipped demo weights, and a
``#``-path override changes one argument of it (``--network_def#dim 8``); a MONAI ``%`` macro to another config file
would resolve from the working directory and take no such override.
"""

from __future__ import annotations

from typing import Any

from .amir import AMIR, Restormer

__all__ = ["DEMO_AMIR", "DEMO_RESTORMER", "demo_amir", "demo_restormer"]

#: The shipped demo AMIR (``models/model.pt``): 2,991,329 parameters.
DEMO_AMIR: dict[str, Any] = {"dim": 24, "num_blocks": (1, 2, 2, 2), "num_refinement_blocks": 1}
#: The same-size Restormer of ``models/baselines/restormer_demo.pt`` (2,961,885 parameters, -1.0 %).
DEMO_RESTORMER: dict[str, Any] = {"dim": 26, "num_blocks": (1, 2, 2, 2), "num_refinement_blocks": 1}


def demo_amir(**overrides: Any) -> AMIR:
    """The demo AMIR, with any argument of :class:`AMIR` overridden."""
    return AMIR(**{**DEMO_AMIR, **overrides})


def demo_restormer(**overrides: Any) -> Restormer:
    """The demo-size Restormer, with any argument of :class:`Restormer` overridden."""
    return Restormer(**{**DEMO_RESTORMER, **overrides})
