"""What the bundle's Ignite workflows need beyond MONAI: the AMIR loss, metrics in the released code's units,
kill-safe checkpoints, the evaluation report with its classical baselines and figures, and folder inference with
its error handling."""

from .baselines import ClassicalBaseline, gaussian_denoise, kspace_bicubic, tune_parameter, tv_denoise
from .checkpoints import BestCheckpoint, ResumableCheckpoint, save_atomic
from .figures import TaskTripletsHandler, display_window, restoration_panel, save_png
from .inference import (
    FolderInference,
    ResolveModalityd,
    SliceOrientationd,
    SliceWiseInferer,
    canonical_modality,
    find_inputs,
    folder_datalist,
    through_plane_axis,
)
from .losses import BalancedL1Loss
from .metrics import METRIC_NAMES, RestorationMetrics, metric_window, restoration_metrics
from .report import RestorationReport, lq_input, markdown_table
from .sampling import limit_per_task, num_epochs, task_sampler

__all__ = [
    "METRIC_NAMES",
    "BalancedL1Loss",
    "BestCheckpoint",
    "ClassicalBaseline",
    "FolderInference",
    "ResolveModalityd",
    "RestorationMetrics",
    "RestorationReport",
    "ResumableCheckpoint",
    "SliceOrientationd",
    "SliceWiseInferer",
    "TaskTripletsHandler",
    "canonical_modality",
    "display_window",
    "find_inputs",
    "folder_datalist",
    "gaussian_denoise",
    "kspace_bicubic",
    "limit_per_task",
    "lq_input",
    "markdown_table",
    "metric_window",
    "num_epochs",
    "restoration_metrics",
    "restoration_panel",
    "save_atomic",
    "save_png",
    "task_sampler",
    "through_plane_axis",
    "tune_parameter",
    "tv_denoise",
]
