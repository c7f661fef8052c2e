"""Operators of the AMIR restoration application: load NIfTI / DICOM, restore with the bundle, write NIfTI / DICOM.

The restoration itself is the App SDK's ``MonaiBundleInferenceOperator`` on the bundle's ``inference.json``
(``preprocessing`` -> ``inferer`` -> ``postprocessing``), so the application and the bundle cannot drift apart.
Two things are added around it:

- :class:`RestorationImageLoader` reads each input with MONAI's ``LoadImage`` (the reader the bundle's
  ``LoadImaged`` uses, which the SDK operator removes from the bundle's preprocessing): channel first, the
  source path kept in the metadata, so that the bundle's ``ResolveModalityd`` reads the DICOM header (Modality,
  PET units) as in ``monai.bundle run``.
- :class:`RestorationBundleInferenceOperator` applies config overrides (``modality``, ``device``...) and emits the
  restoration as float32 in physical units: the SDK operator casts ``image`` outputs to ``uint8`` (segmentations),
  which would destroy HU / SUV values.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.deploy.core import ConditionType, Fragment, Image, Model, Operator, OperatorSpec
from monai.deploy.operators.monai_bundle_inference_operator import DISALLOW_LOAD_SAVE, MonaiBundleInferenceOperator
from monai.utils import MetaKeys

__all__ = [
    "inference_parser",
    "BundleNetwork",
    "RestorationImageLoader",
    "RestorationBundleInferenceOperator",
    "RestorationWriter",
]

logger = logging.getLogger(__name__)


def inference_parser(bundle: str | os.PathLike, overrides: Mapping[str, Any]) -> ConfigParser:
    """The bundle's ``configs/inference.json``, read (not parsed) with ``overrides`` set."""
    parser = ConfigParser()
    parser.read_config(os.fspath(Path(bundle) / "configs" / "inference.json"))
    for key, value in overrides.items():
        parser[key] = value
    return parser


class BundleNetwork(Model):
    """The bundle's network as an App SDK ``Model``, loaded on first use.

    The SDK's model factory turns a bundle folder into a plain ``Model`` without a predictor, so the application
    puts this one in its ``AppContext`` instead. The weights are ``models/model.pt`` loaded into the config's
    ``network_def`` with the bundle's ``scripts.export.load_network`` (``weights_only=True``), or else the
    TorchScript ``models/model.ts``. The network runs in the engine the config's ``backend`` says
    (``scripts.backends``; ``model.ts`` runs in torch).

    Args:
        bundle: the bundle folder (on ``sys.path``, for its ``scripts`` package).
        config_overrides: ids of ``inference.json`` to set first (e.g. ``device``).
    """

    model_type = "amir_bundle"

    def __init__(self, bundle: str | os.PathLike, config_overrides: Mapping[str, Any] | None = None) -> None:
        super().__init__(os.fspath(bundle), name="amir")
        self.config_overrides = dict(config_overrides or {})

    @property
    def predictor(self) -> torch.nn.Module:
        """The network in eval mode, on the config's ``device``."""
        if self._predictor is None:
            self._predictor = self._load()
        return self._predictor

    @predictor.setter
    def predictor(self, predictor: Any) -> None:
        self._predictor = predictor

    def _load(self) -> torch.nn.Module:
        bundle = Path(self.path)
        config = bundle / "configs" / "inference.json"
        parser = inference_parser(bundle, self.config_overrides)
        device = parser.get_parsed_content("device")
        from scripts.runtime import configure_inference  # threads and allocator, as the config's initialize sets

        configure_inference(
            device, parser.get_parsed_content("num_threads"), parser.get_parsed_content("keep_freed_memory")
        )
        weights, scripted = bundle / "models" / "model.pt", bundle / "models" / "model.ts"
        if weights.is_file():
            from scripts.export import load_network  # the bundle's loader (weights_only=True)

            network = load_network(weights, config, overrides=self.config_overrides, device=device)
            network = self._with_backend(network, parser, weights, device)
        elif scripted.is_file():
            network = torch.jit.load(os.fspath(scripted), map_location=device).eval()
        else:
            raise FileNotFoundError(f"{bundle / 'models'} holds neither model.pt nor model.ts.")
        logger.info(f"loaded {weights if weights.is_file() else scripted} on {device}")
        return network

    @staticmethod
    def _with_backend(network: torch.nn.Module, parser: ConfigParser, weights: Path, device: Any) -> torch.nn.Module:
        """``network`` run by the config's ``backend`` (``torch``, ``onnxruntime`` or ``auto``), as in
        ``monai.bundle run``: the bundle's ``scripts.backends.BackendNetwork`` with the config's cache folder."""
        from scripts.backends import BackendNetwork

        return BackendNetwork(
            network,
            parser.get_parsed_content("backend"),
            weights_path=weights,
            cache_dir=parser.get_parsed_content("onnx_cache_dir"),
            network_config=parser.get_parsed_content("backend_network#network_config"),  # the CLI's cache key
            device=device,
            amp=parser.get_parsed_content("amp"),
            compile=False,  # load_network gives the eager network
        )


class RestorationImageLoader(Operator):
    """Emit the inputs one per call: the image (channel first, with its metadata), its source path and its record.

    Schedule it with ``CountCondition(fragment, len(sources))``.

    Named outputs:
        image: ``Image`` holding a float32 ``(1, X, Y[, Z])`` array and MONAI's metadata (affine, source path).
        source: the input (a NIfTI ``Path`` or the bundle's ``DicomSeries``).
        record: what its output is made from (the bundle's ``source_record``: input and weights sha256, the
            settings), taken before the input is read, as ``monai.bundle run`` does, and stored with the output.

    Args:
        fragment: the application.
        sources: the inputs the bundle's ``find_inputs`` found (NIfTI files, DICOM series), in processing order.
        weights_path: the weights file the network was loaded from (None: unknown).
        settings: the inference config's settings that change the pixels (the bundle's ``config_settings``).
    """

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        sources: Sequence[Any],
        weights_path: str | os.PathLike | None = None,
        settings: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not sources:
            raise ValueError("RestorationImageLoader needs at least one input.")
        from scripts.workflows import LoadImageInput  # the bundle's loader (its folder is on sys.path by now)
        from scripts.workflows.provenance import FileDigests

        self.sources = [s if hasattr(s, "files") else Path(s) for s in sources]
        self.weights_path = weights_path
        self.settings = dict(settings or {})
        self._digests = FileDigests()
        self._next = 0
        # DICOM goes to the bundle's checked series reader alone (LoadImage given a reader falls back to others)
        self._load = LoadImageInput(image_only=True, ensure_channel_first=True)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("image")
        spec.output("source")
        spec.output("record")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        if self._next >= len(self.sources):
            raise RuntimeError(f"RestorationImageLoader called more often than its {len(self.sources)} inputs.")
        source = self.sources[self._next]
        self._next += 1
        from scripts.workflows import input_source  # a NIfTI path, or a DICOM series' files in slice order
        from scripts.workflows.inference import source_record

        try:
            record = source_record(source, self.weights_path, self.settings, self._digests)
            image = self._load(input_source(source))
        except Exception as e:
            raise RuntimeError(f"{source}: cannot be read as NIfTI or a DICOM series: {e}") from e
        meta = dict(image.meta)
        meta[MetaKeys.AFFINE] = image.affine.clone()
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0  # already channel first
        logger.info(f"loaded {source}: shape {tuple(image.shape)}")
        op_output.emit(Image(image.as_tensor().numpy().astype(np.float32, copy=False), metadata=meta), "image")
        op_output.emit(source, "source")
        op_output.emit(record, "record")


class RestorationBundleInferenceOperator(MonaiBundleInferenceOperator):
    """``MonaiBundleInferenceOperator`` with config overrides and a float32 restoration as output.

    Args:
        fragment: the application.
        config_overrides: ids of ``inference.json`` to set before it is parsed, e.g. ``{"modality": "ct"}``.
        args: passed to ``MonaiBundleInferenceOperator``.
        kwargs: passed to ``MonaiBundleInferenceOperator`` (``app_context``, ``input_mapping``, ``output_mapping``,
            ``bundle_path``, ...).

    Named input ``image`` (an ``Image`` from :class:`RestorationImageLoader`); named output ``pred``: an ``Image``
    holding the float32 ``(1, X, Y[, Z])`` restoration in physical units on the input's grid, with its metadata.
    """

    def __init__(
        self, fragment: Fragment, *args: Any, config_overrides: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        self._config_overrides = dict(config_overrides or {})
        super().__init__(fragment, *args, **kwargs)

    def _init_config(self, config_names: Sequence[str]) -> None:
        super()._init_config(config_names)
        if not self._config_overrides:
            return
        parser = self._parser
        for key, value in self._config_overrides.items():
            if key not in parser:
                raise KeyError(f"{self.bundle_path}: inference config has no {key!r} to override.")
            parser[key] = value
        # rebuild what the parent built from the parser, with the overrides (one parse: pre- and postprocessing
        # share their objects, as Invertd needs)
        if "device" in self._config_overrides:
            self._device = parser.get_parsed_content("device")
        names = self._bundle_config_names
        if parser.get(names.inferer_name) is not None:
            self._inferer = parser.get_parsed_content(names.inferer_name)
        self._preproc = self._get_compose(names.preproc_name, DISALLOW_LOAD_SAVE)
        self._postproc = self._get_compose(names.postproc_name, DISALLOW_LOAD_SAVE)

    def _send_output(self, value: Any, name: str, metadata: dict, op_output: Any, context: Any) -> None:
        """Emit ``value`` as a float32 ``Image`` with its own metadata (the parent casts images to uint8)."""
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"expected the restoration {name!r} as a tensor, got {type(value).__name__}.")
        meta = dict(value.meta) if isinstance(value, MetaTensor) else dict(metadata)
        if isinstance(value, MetaTensor):
            meta[MetaKeys.AFFINE] = value.affine.clone()
        array = value.detach().cpu()
        array = (array.as_tensor() if isinstance(array, MetaTensor) else array).numpy().astype(np.float32)
        op_output.emit(Image(array, metadata=meta), name)


class RestorationWriter(Operator):
    """Write each restoration as float32 NIfTI with its affine, or as a derived DICOM series, atomically (the
    bundle's writers).

    Named inputs:
        image: the restoration ``Image`` from :class:`RestorationBundleInferenceOperator`.
        source: the source path from :class:`RestorationImageLoader`.
        record: its record from :class:`RestorationImageLoader`, stored with the output as the bundle stores it
            (so that ``monai.bundle run`` keeps a current output and redoes a stale one).

    Args:
        fragment: the application.
        output_folder: where the files go.
        input_root: the application's input, for the relative output names.
        postfix: appended to the output names.
        overwrite: replace existing outputs (default: an existing output is an error, as in the bundle); a DICOM
            output folder is replaced only if the bundle wrote it.
        output_format: ``"auto"`` (DICOM series in, derived DICOM series out; NIfTI in, NIfTI out), ``"nifti"`` or
            ``"dicom"``, as the bundle's ``output_format``.
        modality: the application's ``--modality``: the task of a DICOM series whose Modality tag is not MR, CT or
            PT (the tag wins otherwise, as in the bundle's inference).
    """

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        output_folder: str | os.PathLike,
        input_root: str | os.PathLike,
        postfix: str = "restored",
        overwrite: bool = False,
        output_format: str = "auto",
        modality: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.output_folder = Path(output_folder)
        self.input_root = Path(input_root)
        self.postfix = postfix
        self.overwrite = overwrite
        self.output_format = output_format
        self.modality = modality
        self.written: list[Path] = []
        self._cleaned: set[Path] = set()
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("image")
        spec.input("source").condition(ConditionType.MESSAGE_AVAILABLE)
        spec.input("record").condition(ConditionType.MESSAGE_AVAILABLE)

    def writes_dicom(self, source: Any) -> bool:
        """Whether the restoration of ``source`` is written as a DICOM series (see ``output_format``)."""
        from scripts.workflows.dicom import DicomSeries

        return self.output_format == "dicom" or (self.output_format == "auto" and isinstance(source, DicomSeries))

    def target(self, source: Any) -> Path:
        """Where the restoration of ``source`` goes (the bundle's sanitised naming): a NIfTI file or a series folder."""
        from scripts.workflows import output_name

        target = self.output_folder / output_name(source, self.input_root, self.postfix)
        return target.with_name(target.name[: -len(".nii.gz")]) if self.writes_dicom(source) else target

    def check_targets(self, sources: Sequence[Any]) -> None:
        """Refuse, before any input is restored, what would make a write fail after the work: an output that exists
        (without ``overwrite``), one the bundle must not replace, two inputs with one output, an output folder that
        cannot be written, a path outside the output folder.

        Raises:
            UserInputError: one line naming the output (and how many more), and what to do.
        """
        from scripts.errors import UserInputError
        from scripts.workflows.dicom import DicomSeries
        from scripts.workflows.dicom_output import series_output_status
        from scripts.workflows.naming import check_inside, check_writable

        targets: dict[Path, Any] = {}
        for source in sources:
            target = check_inside(self.target(source), self.output_folder)
            if target in targets:
                raise UserInputError(f"{source}: its output {target} would also be that of {targets[target]}")
            targets[target] = source
            if self.writes_dicom(source) and not isinstance(source, DicomSeries):
                raise UserInputError(f"{source}: --output-format dicom needs a DICOM series; use auto or nifti")
        existing = [t for t in targets if t.exists() or t.is_symlink()]
        if existing and not self.overwrite:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise UserInputError(
                f"{existing[0]}: exists{more}; remove it, choose another output folder, or pass --overwrite"
            )
        for target in existing:
            if self.writes_dicom(targets[target]) and series_output_status(target) == "foreign":
                raise UserInputError(
                    f"{target}: exists and was not written by the bundle, so it is left alone; choose another folder"
                )
        for folder in sorted({t.parent for t in targets}) or [self.output_folder]:
            check_writable(folder)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        # the bundle's atomic float32 NIfTI writer, its naming of restored files and its DICOM series writer
        from scripts.atomic import remove_stale_temporaries
        from scripts.workflows import FolderInference
        from scripts.workflows.dicom import DicomSeries
        from scripts.workflows.dicom_output import read_series_headers, series_task, write_dicom_series
        from scripts.workflows.naming import check_inside
        from scripts.workflows.outputs import check_finite_result

        image = op_input.receive("image")
        source = op_input.receive("source")
        record = op_input.receive("record")
        source = source if isinstance(source, DicomSeries) else Path(source)
        meta = dict(image.metadata())
        affine = meta.pop(MetaKeys.AFFINE, None)
        pred = MetaTensor(torch.from_numpy(np.asarray(image.asnumpy(), dtype=np.float32)), affine=affine, meta=meta)
        check_finite_result(pred, str(source))  # never write a NaN image
        target = check_inside(self.target(source), self.output_folder)
        if target.parent not in self._cleaned:  # partial outputs of a killed run (the bundle's own temp files only)
            self._cleaned.add(target.parent)
            for path in remove_stale_temporaries(target.parent):
                logger.info(f"removed {path}, a partial output of an earlier run that was stopped")
        if self.writes_dicom(source):  # a derived series in the folder <name>_restored/, as the bundle writes it
            if not isinstance(source, DicomSeries):
                raise ValueError(f"{source}: --output-format dicom needs a DICOM series; use auto or nifti.")
            task = series_task(read_series_headers(source.files[:1]), self.modality)
            write_dicom_series(pred, source.files, target, task=task, overwrite=self.overwrite, record=record)
        else:
            if target.exists() and not self.overwrite:
                raise FileExistsError(f"{target} exists; remove it or pass --overwrite.")
            FolderInference.write(pred, target, record)
        self.written.append(target)
        logger.info(f"{source} -> {target}")
