"""Routing and task-interference analysis of a trained AMIR (the evidence of the paper's Fig. III and Fig. I(b)).

:class:`RoutingAnalysis` (run by ``configs/analyze.json``) records, with forward hooks, which SRM experts each task's
tokens use, the RIN instruction of every slice and the CRM masks, measures the task interference, and writes a
report with its tables and figures. One module per concept: :mod:`.capture` (hooks), :mod:`.expert_use`,
:mod:`.instructions`, :mod:`.channel_masks`, :mod:`.interference`, :mod:`.plots`, :mod:`.output` (the folder) and
:mod:`.report`.
"""

from .analyze import AnalysisResults, RoutingAnalysis, Slice, load_network_weights, spread_per_task
from .capture import ForwardRouting, RoutingRecorder, crm_mask, srm_routing
from .channel_masks import ChannelMasks, mask_distance
from .expert_use import ExpertUse
from .instructions import Separability, embed_2d, nearest_centroid_cv, pca_2d
from .interference import InterferenceResult, interference_sets, task_interference
from .report import write_report

__all__ = [
    "AnalysisResults",
    "ChannelMasks",
    "ExpertUse",
    "ForwardRouting",
    "InterferenceResult",
    "RoutingAnalysis",
    "RoutingRecorder",
    "Separability",
    "Slice",
    "crm_mask",
    "embed_2d",
    "interference_sets",
    "load_network_weights",
    "mask_distance",
    "nearest_centroid_cv",
    "pca_2d",
    "spread_per_task",
    "srm_routing",
    "task_interference",
    "write_report",
]
