"""Folder inference: the slice-wise inferer and the runner that restores a folder of images into NIfTI files.

The pieces are MONAI transforms and an inferer, so MONAI Label's bundle infer task can use them as they are
(``preprocessing`` -> ``inferer`` -> ``postprocessing``, the restoration as ``pred``). :class:`FolderInference`, an
Ignite engine, adds what a folder run needs: never touching the inputs, never overwriting what the bundle did not
write, writing each output atomically, and going on past a bad file. Inputs are found and checked by
:mod:`.inputs` and :mod:`.dicom`, 3-D volumes oriented by :mod:`.orientation`, outputs written by :mod:`.outputs`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events, State
from monai.data import Dataset, MetaTensor
from monai.inferers import Inferer, SliceInferer, SlidingWindowInferer
from tqdm import tqdm

from ..atomic import remove_stale_temporaries
from ..errors import UserInputError, find_user_error
from .dicom import DicomSeries
from .dicom_output import OUTPUT_FORMATS, series_output_status, write_dicom_series
from .inputs import MODALITY_ALIASES
from .naming import check_inside, check_writable, output_name
from .outputs import check_finite_result, output_record, output_status, write_restoration
from .provenance import FileDigests, make_record, read_series_record, record_differences

__all__ = ["SliceWiseInferer", "output_name", "source_record", "FolderInference"]


class SliceWiseInferer(Inferer):
    """Runs a 2-D network on whole slices: a 2-D image at once, a 3-D volume slice by slice along its last axis.

    Whole slices by default, because AMIR's attention and routing instruction are global (tiles would change the
    result). Only slices above ``max_slice_pixels`` pixels are tiled, in ``tile_size`` windows with Gaussian
    blending, to bound memory: peak memory is about ``batch_size`` times one slice's (or tile's) activations.

    Args:
        batch_size: slices (or tiles) per network call.
        max_slice_pixels: largest slice restored whole (default 1024 x 1024).
        tile_size: tile of larger slices.
        tile_overlap: overlap of the tiles.
        progress: show a progress bar: over the slices of a volume restored whole, over the batches of tiles.
    """

    def __init__(
        self,
        batch_size: int = 4,
        max_slice_pixels: int = 1024 * 1024,
        tile_size: Sequence[int] = (512, 512),
        tile_overlap: float = 0.25,
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.max_slice_pixels = max_slice_pixels
        self.tile_size = tuple(tile_size)
        self.tile_overlap = tile_overlap
        self.progress = progress

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """
        Args:
            inputs: ``(N, C, H, W)`` or ``(N, C, H, W, S)`` (slices along the last axis).
            network: 2-D network.
            args: passed to the network.
            kwargs: passed to the network.

        Returns:
            The network's output, same spatial shape as ``inputs``.
        """
        if inputs.ndim not in (4, 5):
            raise ValueError(f"expected (N, C, H, W) or (N, C, H, W, S) input, got shape {tuple(inputs.shape)}.")
        h, w = inputs.shape[2:4]
        tiled = h * w > self.max_slice_pixels
        options = {
            "roi_size": self.tile_size if tiled else (-1, -1),
            "sw_batch_size": self.batch_size,
            "overlap": self.tile_overlap if tiled else 0.0,
            "mode": "gaussian" if tiled else "constant",
            "progress": self.progress and tiled,  # MONAI's bar counts batches of tiles
        }
        inferer = SliceInferer(spatial_dim=2, **options) if inputs.ndim == 5 else SlidingWindowInferer(**options)
        if not (self.progress and inputs.ndim == 5 and not tiled):
            return inferer(inputs, network, *args, **kwargs)
        with tqdm(total=inputs.shape[0] * inputs.shape[-1], unit="slice", desc="restoring", leave=False) as bar:

            def counted(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
                out = network(x, *a, **k)
                bar.update(x.shape[0])  # one count per slice restored
                return out

            return inferer(inputs, counted, *args, **kwargs)


def _message(error: BaseException, name: str) -> str:
    """One line saying why an input failed: a user error's own message (it names the file), else the innermost
    cause (MONAI wraps transform errors in "applying transform ...") after the input's name."""
    user = find_user_error(error)
    if user is not None:
        text = str(user)
    else:
        while error.__cause__ is not None:
            error = error.__cause__
        text = f"{error}" if str(error).startswith(name) else f"{name}: failed: {type(error).__name__}: {error}"
    text = " ".join(text.split())  # ITK's messages span lines
    return text if len(text) <= 400 else text[:397] + "..."


def source_record(
    source: Path | DicomSeries,
    weights_path: str | os.PathLike | None,
    settings: Mapping[str, Any],
    digests: FileDigests | None = None,
) -> dict[str, Any]:
    """What the output of ``source`` is made from: the input files' and weights' sha256, and the settings, with
    ``modality`` as the task the input is restored as (a DICOM header's MR / CT / PT wins over the option).

    Args:
        source: a NIfTI file or a DICOM series.
        weights_path: the weights file (None: unknown).
        settings: the settings that change the pixels (:func:`~scripts.workflows.provenance.config_settings`).
        digests: the run's cache of file digests.

    Returns:
        The record (:func:`~scripts.workflows.provenance.make_record`).
    """
    files = source.files if isinstance(source, DicomSeries) else (source,)
    if "modality" in settings:
        tag = source.modality if isinstance(source, DicomSeries) else ""
        option = str(settings["modality"] or "").strip().lower()
        task = MODALITY_ALIASES.get(tag.strip().lower()) or MODALITY_ALIASES.get(option, settings["modality"])
        settings = {**settings, "modality": task}
    return make_record(files, weights_path, settings, digests)


class FolderInference(Engine):
    """Ignite engine restoring a dataset of images (NIfTI files, DICOM series) into NIfTI files, one per iteration.

    ``dataset`` holds the items of :func:`~scripts.workflows.folder_datalist` (or plain ``{"image": path}``) and
    applies the preprocessing when indexed. Each input ``<dataset_dir>/<rel>/<name>.nii[.gz]`` or DICOM series in
    ``<rel>/<name>`` gives ``output_dir/<rel>/<name>_<postfix>.nii.gz`` (see :func:`output_name`): float32, the
    input's shape and affine, physical units (HU for CT, SUV for PET), never NaN.

    Files: inputs are only read. An output is written to a temporary file and renamed, so none is ever partial;
    temporary files of a killed run are removed at the next start. Each output records what made it (the sha256
    of its input files and of ``weights_path``, and ``settings``; :mod:`.provenance`). Without ``overwrite`` an
    existing output that the bundle wrote, that reads back whole and whose record matches is kept; one it wrote
    but is broken, or stale (another input content, other weights or settings, or no record), is written again
    with a line saying why; any other file in the way is an error naming it (the bundle never replaces what it
    did not write). Two inputs that would write the same output both fail. An output folder that cannot be written
    is refused before the first input is restored, and no output is written outside ``output_dir``.

    An input that fails is logged in one line naming it and the others go on; ``state.failed`` lists them after
    :meth:`run`, which can also raise one error summing them up (what the command line run does).

    Args:
        dataset: MONAI ``Dataset`` of the items with the preprocessing as its transform.
        dataset_dir: the folder the inputs were found in (output names are relative to it).
        output_dir: folder of the outputs.
        network: the network (weights loaded by a handler such as ``CheckpointLoader``, or already).
        inferer: runs the network (e.g. :class:`SliceWiseInferer`).
        postprocessing: transform of the item with ``pred`` to physical units on the input grid.
        device: device of the network.
        overwrite: replace existing outputs, whoever wrote them.
        output_postfix: appended to the output names.
        handlers: Ignite handlers to attach (``CheckpointLoader``, ``ProgressBar``, ...).
        output_format: ``"auto"`` (a DICOM series gives a derived DICOM series, a NIfTI file a NIfTI file),
            ``"nifti"`` (NIfTI for every input) or ``"dicom"`` (DICOM for every input; a NIfTI input fails). A DICOM
            output is the folder ``<rel>/<name>_<postfix>/`` (:mod:`.dicom_output`); ``overwrite`` replaces only
            a series folder the bundle wrote.
        weights_path: the weights file the network was loaded from (its sha256 goes into each output's record).
        settings: the settings that change the pixels (config: :func:`~scripts.workflows.provenance.config_settings`).
    """

    def __init__(
        self,
        dataset: Dataset,
        dataset_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        network: torch.nn.Module,
        inferer: Inferer,
        postprocessing: Callable,
        device: str | torch.device = "cpu",
        overwrite: bool = False,
        output_postfix: str = "restored",
        handlers: Sequence[Any] | None = None,
        output_format: str = "auto",
        weights_path: str | os.PathLike | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(self._iteration)
        if output_format not in OUTPUT_FORMATS:
            raise UserInputError(f"output_format {output_format!r}: use one of {', '.join(OUTPUT_FORMATS)}")
        self.output_format = output_format
        self.dataset = dataset
        self.dataset_dir = Path(dataset_dir)
        self.output_dir = Path(output_dir)
        self.network = network
        self.inferer = inferer
        self.postprocessing = postprocessing
        self.device = torch.device(device)
        self.overwrite = overwrite
        self.output_postfix = output_postfix
        self.weights_path = None if weights_path is None else Path(weights_path)
        self.settings = dict(settings or {})
        self.digests = FileDigests()  # each input and the weights hashed once per run
        self.add_event_handler(Events.STARTED, self._started)
        for handler in handlers or ():
            handler.attach(self)
        self.add_event_handler(Events.COMPLETED, self._completed)

    def run(
        self, data: Sequence[int] | None = None, max_epochs: int = 1, raise_on_failure: bool = False, **kwargs: Any
    ) -> State:
        """Restore every item of the dataset (or the given indices).

        Args:
            data: indices of the dataset's items (default: all).
            max_epochs: 1.
            raise_on_failure: after the run, raise one error summing up the failed inputs.
            kwargs: passed to ``Engine.run``.

        Returns:
            The engine state; ``state.failed`` lists the inputs that failed, ``state.errors`` why.

        Raises:
            UserInputError: ``raise_on_failure`` and an input failed (one line; the log has each input's line).
        """
        state = super().run(range(len(self.dataset)) if data is None else data, max_epochs=max_epochs, **kwargs)
        if raise_on_failure and state.failed:
            messages = list(state.errors.values())
            if len(messages) == 1:
                raise UserInputError(messages[0])
            more = f"; and {len(messages) - 3} more (see the log)" if len(messages) > 3 else ""
            raise UserInputError(
                f"{len(messages)} of {len(state.outcomes)} inputs failed: {'; '.join(messages[:3])}{more}"
            )
        return state

    def input_of(self, index: int) -> Path | DicomSeries:
        """Input ``index`` of the dataset: its ``"input"`` (from ``folder_datalist``), else its image path."""
        item = self.dataset.data[index]
        return item["input"] if "input" in item else Path(os.fspath(item["image"]))

    def writes_dicom(self, source: Path | DicomSeries) -> bool:
        """Whether the restoration of ``source`` is written as a DICOM series (see ``output_format``)."""
        return self.output_format == "dicom" or (self.output_format == "auto" and isinstance(source, DicomSeries))

    def output_path(self, source: Path | DicomSeries) -> Path:
        """Where the restoration of ``source`` goes: a NIfTI file, or the folder of a DICOM series."""
        path = self.output_dir / output_name(source, self.dataset_dir, self.output_postfix)
        return path.with_name(path.name[: -len(".nii.gz")]) if self.writes_dicom(source) else path

    def restore(self, index: int) -> MetaTensor:
        """The restoration of item ``index``, in physical units on the input's grid (never NaN)."""
        data = self.dataset[index]
        image = data["image"]
        with torch.inference_mode():  # the network gets a plain tensor; the metadata stays beside, with the image
            inputs = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
            output = self.inferer(inputs.unsqueeze(0).to(self.device), self.network)[0].cpu()
        pred = MetaTensor(output)
        if isinstance(image, MetaTensor):
            pred.copy_meta_from(image)  # the image's metadata and transforms, for Invertd in the postprocessing
        data["pred"] = pred
        data = self.postprocessing(data)
        pred, image = data["pred"], data["image"]
        expected = tuple(int(s) for s in image.meta.get("spatial_shape", pred.shape[1:]))
        if tuple(pred.shape[1:]) != expected:
            raise RuntimeError(f"restoration of shape {tuple(pred.shape[1:])} does not match the input {expected}.")
        check_finite_result(pred, str(self.input_of(index)))
        pred.meta["task"] = data.get("task")  # what a DICOM output needs to store the values in the input's units
        return pred

    @staticmethod
    def write(pred: MetaTensor, path: Path, record: Mapping[str, Any] | None = None) -> None:
        """Write ``pred`` (channel first) as the bundle's float32 NIfTI, atomically (see :func:`write_restoration`)."""
        write_restoration(pred, path, record)

    def record(self, source: Path | DicomSeries) -> dict[str, Any]:
        """What the output of ``source`` is made from (:func:`source_record`)."""
        return source_record(source, self.weights_path, self.settings, self.digests)

    def write_output(
        self,
        pred: MetaTensor,
        source: Path | DicomSeries,
        target: Path,
        record: Mapping[str, Any] | None = None,
        replace: bool = False,
    ) -> None:
        """Write the restoration of ``source`` to ``target`` in the format :meth:`writes_dicom` says.

        Args:
            pred: the restoration.
            source: its input.
            target: its output path (checked to be inside the output folder).
            record: what made it, stored with it.
            replace: replace an output series of the bundle already there (a stale one).
        """
        check_inside(target, self.output_dir)
        if not self.writes_dicom(source):
            self.write(pred, target, record)
        elif not isinstance(source, DicomSeries):
            raise UserInputError(f"{source}: output_format dicom needs a DICOM series; use output_format auto or nifti")
        else:
            overwrite = self.overwrite or replace
            write_dicom_series(pred, source.files, target, pred.meta["task"], overwrite, record=record)

    def _started(self, engine: Engine) -> None:
        self.state.failed, self.state.errors, self.state.outcomes = [], {}, {}
        self.network.eval()
        indices = range(len(self.dataset))
        self._targets = {i: self.output_path(self.input_of(i)) for i in indices}
        self._clashes: dict[Path, list[str]] = defaultdict(list)
        for i, target in self._targets.items():
            self._clashes[target].append(str(self.input_of(i)))
        folders = sorted({t.parent for t in self._targets.values()})
        for folder in folders or [self.output_dir]:  # before any work: a folder that cannot be written is an error
            check_writable(folder)
        for folder in folders:
            for path in remove_stale_temporaries(folder):
                self.logger.info(f"removed {path}, a partial output of an earlier run that was stopped")

    def _fail(self, name: str, message: str) -> dict[str, Any]:
        self.state.failed.append(name)
        self.state.errors[name] = message
        self.logger.error(message)
        return {"source": name, "status": "failed"}

    def _iteration(self, engine: Engine, index: int) -> dict[str, Any]:
        source = self.input_of(index)
        name, target = str(source), self._targets[index]
        self.state.outcomes[name] = "failed"
        if len(self._clashes[target]) > 1:
            others = ", ".join(n for n in self._clashes[target] if n != name)
            return self._fail(name, f"{name}: its output {target} would also be that of {others}; rename one")
        try:  # before the input is read for the restoration: a change meanwhile makes the output stale next time
            record = self.record(source)
        except OSError as e:
            return self._fail(name, f"{name}: cannot be read ({e.strerror or e})")
        dicom = self.writes_dicom(source)
        status = "missing" if self.overwrite else (series_output_status if dicom else output_status)(target, record)
        if status == "complete":
            self.logger.info(f"{target} exists, kept (overwrite=true writes it again).")
            self.state.outcomes[name] = "kept"
            return {"source": name, "target": target, "status": "kept"}
        if status == "foreign":
            return self._fail(
                name,
                f"{target}: exists and was not written by this bundle, so it is left alone; remove it, choose "
                "another output_dir or output_postfix, or pass --overwrite true",
            )
        if status == "broken":
            self.logger.warning(f"{target}: an incomplete output of this bundle; writing it again.")
        if status == "stale":
            recorded = read_series_record(target) if dicom else output_record(target)
            why = ", ".join(record_differences(recorded, record))
            self.logger.warning(f"{target}: made from other inputs or settings ({why}); writing it again.")
        try:
            path = source.path if isinstance(source, DicomSeries) else source
            if target.resolve() == path.resolve():
                raise UserInputError(
                    f"{name}: the output would replace the input; choose another output_dir or postfix"
                )
            self.write_output(self.restore(index), source, target, record, replace=status == "stale")
        except Exception as e:  # one bad input must not stop the others
            if find_user_error(e) is None:
                self.logger.debug(f"{name}: traceback", exc_info=e)
            return self._fail(name, _message(e, name))
        self.logger.info(f"{name} -> {target}")
        self.state.outcomes[name] = "restored"
        return {"source": name, "target": target, "status": "restored"}

    def _completed(self, engine: Engine) -> None:
        total, failed = len(self.state.outcomes), self.state.failed
        self.logger.info(f"{total - len(failed)} of {total} inputs restored or kept in {self.output_dir}.")
        if failed:
            self.logger.error(f"{len(failed)} failed: {', '.join(failed)}")
