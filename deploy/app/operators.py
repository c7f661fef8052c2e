"""Operators of the AMIR restoration application: load NIfTI / DICOM, restore with the bundle, write NIfTI.

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
from monai.transforms import LoadImage
from monai.utils import MetaKeys

__all__ = [
    "BundleNetwork",
    "RestorationImageLoader",
    "RestorationBundleInferenceOperator",
    "RestorationNiftiWriter",
]

logger = logging.getLogger(__name__)


class BundleNetwork(Model):
    """The bundle's network as an App SDK ``Model``, loaded on first use.

    The SDK's model factory turns a bundle folder into a plain ``Model`` without a predictor, so the application
    puts this one in its ``AppContext`` instead. The weights are ``models/model.pt`` loaded into the config's
    ``network_def`` with the bundle's ``scripts.export.load_network`` (``weights_only=True``), or else the
    TorchScript ``models/model.ts``.

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
        parser = ConfigParser()
        parser.read_config(os.fspath(config))
        for key, value in self.config_overrides.items():
            parser[key] = value
        device = parser.get_parsed_content("device")
        weights, scripted = bundle / "models" / "model.pt", bundle / "models" / "model.ts"
        if weights.is_file():
            from scripts.export import load_network  # the bundle's loader (weights_only=True)

            network = load_network(weights, config, overrides=self.config_overrides, device=device)
        elif scripted.is_file():
            network = torch.jit.load(os.fspath(scripted), map_location=device).eval()
        else:
            raise FileNotFoundError(f"{bundle / 'models'} holds neither model.pt nor model.ts.")
        logger.info(f"loaded {weights if weights.is_file() else scripted} on {device}")
        return network


class RestorationImageLoader(Operator):
    """Emit the inputs one per call: the image (channel first, with its metadata) and its source path.

    Schedule it with ``CountCondition(fragment, len(sources))``.

    Named outputs:
        image: ``Image`` holding a float32 ``(1, X, Y[, Z])`` array and MONAI's metadata (affine, source path).
        source: the source path (``Path``).

    Args:
        fragment: the application.
        sources: NIfTI files and DICOM series folders, in processing order.
    """

    def __init__(self, fragment: Fragment, *args: Any, sources: Sequence[str | os.PathLike], **kwargs: Any) -> None:
        if not sources:
            raise ValueError("RestorationImageLoader needs at least one input.")
        self.sources = [Path(s) for s in sources]
        self._next = 0
        self._load = LoadImage(image_only=True, ensure_channel_first=True)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("image")
        spec.output("source")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        if self._next >= len(self.sources):
            raise RuntimeError(f"RestorationImageLoader called more often than its {len(self.sources)} inputs.")
        source = self.sources[self._next]
        self._next += 1
        try:
            image = self._load(os.fspath(source))
        except Exception as e:
            raise RuntimeError(f"{source}: cannot be read as NIfTI or a DICOM series: {e}") from e
        meta = dict(image.meta)
        meta[MetaKeys.AFFINE] = image.affine.clone()
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0  # already channel first
        logger.info(f"loaded {source}: shape {tuple(image.shape)}")
        op_output.emit(Image(image.as_tensor().numpy().astype(np.float32, copy=False), metadata=meta), "image")
        op_output.emit(source, "source")


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


class RestorationNiftiWriter(Operator):
    """Write each restoration as float32 NIfTI with its affine, atomically (the bundle's writer).

    Named inputs:
        image: the restoration ``Image`` from :class:`RestorationBundleInferenceOperator`.
        source: the source path from :class:`RestorationImageLoader`.

    Args:
        fragment: the application.
        output_folder: where the files go.
        input_root: the application's input, for the relative output names.
        postfix: appended to the output names.
        overwrite: replace existing outputs (default: an existing output is an error, as in the bundle).
    """

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        output_folder: str | os.PathLike,
        input_root: str | os.PathLike,
        postfix: str = "restored",
        overwrite: bool = False,
        **kwargs: Any,
    ) -> None:
        self.output_folder = Path(output_folder)
        self.input_root = Path(input_root)
        self.postfix = postfix
        self.overwrite = overwrite
        self.written: list[Path] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("image")
        spec.input("source").condition(ConditionType.MESSAGE_AVAILABLE)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        from scripts.workflows import FolderInference  # the bundle's atomic float32 NIfTI writer

        image = op_input.receive("image")
        source = Path(op_input.receive("source"))
        meta = dict(image.metadata())
        affine = meta.pop(MetaKeys.AFFINE, None)
        pred = MetaTensor(torch.from_numpy(np.asarray(image.asnumpy(), dtype=np.float32)), affine=affine, meta=meta)
        from scripts.workflows.inference import output_name  # the bundle's own naming of restored files

        target = self.output_folder / output_name(source, self.input_root, self.postfix)
        if target.exists() and not self.overwrite:
            raise FileExistsError(f"{target} exists; remove it or pass --overwrite.")
        FolderInference.write(pred, target)
        self.written.append(target)
        logger.info(f"{source} -> {target}")
