"""What the bundle's Ignite workflows need beyond MONAI: the AMIR loss, metrics in the released code's units,
kill-safe checkpoints, the evaluation report with its classical baselines and figures, folder inference with its
error handling, and for speed: plain-tensor batches, mixed precision and compilation as configuration, an EMA of
the weights and the non-finite guard."""

from .baselines import ClassicalBaseline, gaussian_denoise, kspace_bicubic, tune_parameter, tuning_items, tv_denoise
from .batches import PlainBatch, plain_tensor
from .checkpoints import BestCheckpoint, ResumableCheckpoint, rng_state, save_atomic, saved_iteration, set_rng_state
from .datacheck import check_training_data
from .dicom import DicomSeries, DicomSeriesReader, scan_dicom_folder
from .ema import WeightEMA
from .figures import TaskTripletsHandler, display_window, restoration_panel, save_png
from .guards import NonFiniteError, NonFiniteGuard, nonfinite_items
from .inference import FolderInference, SliceWiseInferer, output_name
from .inputs import (
    MODALITY_ALIASES,
    CheckInputd,
    LoadImageInput,
    LoadImageInputd,
    ResolveModalityd,
    canonical_modality,
    find_inputs,
    folder_datalist,
    input_source,
    is_nifti,
)
from .losses import BalancedL1Loss
from .metrics import METRIC_NAMES, RestorationMetrics, metric_window, restoration_metrics
from .orientation import SliceOrientationd, through_plane_axis
from .outputs import OUTPUT_MARKER, is_bundle_output, output_status, write_restoration
from .precision import AmpTrainer, AutocastInferer, grad_scaler, maybe_compile, resolve_amp_dtype
from .report import RestorationReport, lq_input, markdown_table
from .runs import TrainingRun, executed_config, list_runs, run_dir
from .sampling import SeededDataset, TaskSampler, default_num_workers, limit_per_task
from .schedule import IterationLog, IterationSchedule, LogSchedule, TrainingProgress, handlers_for_rank, num_epochs

__all__ = [
    "AmpTrainer",
    "AutocastInferer",
    "NonFiniteError",
    "NonFiniteGuard",
    "PlainBatch",
    "WeightEMA",
    "grad_scaler",
    "maybe_compile",
    "nonfinite_items",
    "plain_tensor",
    "resolve_amp_dtype",
    "METRIC_NAMES",
    "MODALITY_ALIASES",
    "OUTPUT_MARKER",
    "BalancedL1Loss",
    "BestCheckpoint",
    "CheckInputd",
    "ClassicalBaseline",
    "DicomSeries",
    "DicomSeriesReader",
    "FolderInference",
    "LoadImageInput",
    "LoadImageInputd",
    "ResolveModalityd",
    "RestorationMetrics",
    "RestorationReport",
    "ResumableCheckpoint",
    "SeededDataset",
    "TaskSampler",
    "TrainingProgress",
    "IterationLog",
    "IterationSchedule",
    "LogSchedule",
    "SliceOrientationd",
    "SliceWiseInferer",
    "TaskTripletsHandler",
    "canonical_modality",
    "display_window",
    "find_inputs",
    "folder_datalist",
    "gaussian_denoise",
    "input_source",
    "is_bundle_output",
    "is_nifti",
    "kspace_bicubic",
    "limit_per_task",
    "default_num_workers",
    "handlers_for_rank",
    "lq_input",
    "markdown_table",
    "metric_window",
    "num_epochs",
    "output_name",
    "output_status",
    "restoration_metrics",
    "restoration_panel",
    "save_atomic",
    "saved_iteration",
    "rng_state",
    "set_rng_state",
    "check_training_data",
    "TrainingRun",
    "executed_config",
    "list_runs",
    "run_dir",
    "save_png",
    "scan_dicom_folder",
    "through_plane_axis",
    "tune_parameter",
    "tuning_items",
    "tv_denoise",
    "write_restoration",
]
