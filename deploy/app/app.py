"""MONAI Deploy application: restore NIfTI images and DICOM series with the AMIR bundle, write NIfTI or DICOM.

Usage (from the repository root)::

    python deploy/app -i <input> -o <output folder> -m bundle [--modality mri|ct|pet] [--overwrite]
        [--output-format auto|nifti|dicom] [--backend auto|torch|onnxruntime]

``<input>`` is a NIfTI file, a DICOM series folder, or a folder holding several of them (searched recursively,
as the bundle's inference does). ``-m`` is the bundle folder (``configs/``, ``scripts/``, ``models/model.ts``
or ``models/model.pt``). The modality of DICOM input is its Modality tag (MR, CT, PT); NIfTI input needs
``--modality`` (or the ``AMIR_MODALITY`` environment variable, e.g. in a packaged MAP). Each input
``<rel>/<name>`` gives ``<output>/<rel>/<name>_restored.nii.gz``: float32, physical units (HU, scanner units,
SUV), the input's grid and affine; with ``--output-format auto`` (the default) a DICOM series gives a derived DICOM
series in the folder ``<rel>/<name>_restored/`` instead (the input's geometry, patient and study, and units: HU,
SUV or Bq/ml as the input had). Without ``-i/-o/-m`` the ``HOLOSCAN_INPUT_PATH`` / ``HOLOSCAN_OUTPUT_PATH`` /
``HOLOSCAN_MODEL_PATH`` environment variables are used, as in a MAP.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application, Image, IOType
from monai.deploy.operators.monai_bundle_inference_operator import BundleConfigNames, IOMapping

if __package__ in (None, ""):  # run as a script (python deploy/app/app.py): make the sibling module importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from operators import (
        BundleNetwork,
        RestorationBundleInferenceOperator,
        RestorationImageLoader,
        RestorationWriter,
        inference_parser,
    )
else:
    from .operators import (
        BundleNetwork,
        RestorationBundleInferenceOperator,
        RestorationImageLoader,
        RestorationWriter,
        inference_parser,
    )

__all__ = ["MODALITY_ENV", "AMIRRestorationApp", "find_bundle", "main"]

#: Environment variable giving the modality when ``--modality`` is not passed (e.g. to a packaged MAP).
MODALITY_ENV = "AMIR_MODALITY"

logger = logging.getLogger(__name__)


def find_bundle(model_path: str | os.PathLike) -> Path:
    """The bundle folder for the application's model path.

    Accepted: the bundle folder itself; a folder holding exactly one bundle folder (a MAP's models folder); a
    model file inside ``<bundle>/models/``.

    Args:
        model_path: ``-m`` / ``HOLOSCAN_MODEL_PATH``.

    Returns:
        The bundle folder (it holds ``configs/metadata.json``).

    Raises:
        FileNotFoundError: no bundle there; the message says what is expected.
    """
    path = Path(model_path).expanduser().resolve()

    def is_bundle(p: Path) -> bool:
        return (p / "configs" / "metadata.json").is_file() and (p / "configs" / "inference.json").is_file()

    candidates = [path, path.parent.parent] if path.is_file() else [path]
    if path.is_dir():
        candidates += [child for child in sorted(path.iterdir()) if child.is_dir()]
    found = [c for c in candidates if is_bundle(c)]
    if not found:
        raise FileNotFoundError(
            f"{model_path}: not an AMIR bundle; give the bundle folder (with configs/inference.json, "
            "configs/metadata.json and models/model.ts or models/model.pt) as -m."
        )
    return found[0]


class AMIRRestorationApp(Application):
    """Load -> restore with the bundle (``MonaiBundleInferenceOperator``) -> write NIfTI or DICOM, one input at a time.

    Args:
        args: passed to ``Application`` (``argv``).
        modality: modality of every input (mri, ct, pet; DICOM's MR, CT, PT); None: the DICOM Modality tag.
        overwrite: replace existing outputs.
        output_format: ``"auto"`` (DICOM out for DICOM in, NIfTI out for NIfTI in), ``"nifti"`` or ``"dicom"``.
        backend: the engine of the network, ``"auto"``, ``"torch"`` or ``"onnxruntime"`` (None: the config's).
        kwargs: passed to ``Application``.
    """

    def __init__(
        self,
        *args: Any,
        modality: str | None = None,
        overwrite: bool = False,
        output_format: str = "auto",
        backend: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.modality = modality
        self.backend = backend
        self.overwrite = overwrite
        self.output_format = output_format
        self.sources: list[Path] = []
        self.writer: RestorationWriter | None = None
        self.compose_error: BaseException | None = None
        super().__init__(*args, **kwargs)

    def compose(self) -> None:
        """Build the operator graph for the inputs found under the input path."""
        try:
            self._compose()
        except BaseException as e:  # the executor reports but swallows errors raised here: keep it for main()
            self.compose_error = e
            raise

    def _compose(self) -> None:
        app_context: AppContext = Application.init_app_context(self.argv)
        input_path, output_path = Path(app_context.input_path), Path(app_context.output_path)
        bundle = find_bundle(app_context.model_path)
        if str(bundle) not in sys.path:  # the bundle's configs import its `scripts` package
            sys.path.insert(0, str(bundle))
        from scripts.backends import check_backend
        from scripts.workflows import canonical_modality, find_inputs

        modality = canonical_modality(self.modality) if self.modality else None  # a clear error for a typo
        backend = check_backend(self.backend) if self.backend else None
        sources = self.sources = find_inputs(input_path, exclude=[output_path])  # never its own outputs
        logger.info(f"bundle {bundle}; {len(sources)} input(s) under {input_path}; modality {modality or 'from DICOM'}")
        writer = self.writer = RestorationWriter(
            self,
            output_folder=output_path,
            input_root=input_path,
            overwrite=self.overwrite,
            output_format=self.output_format,
            modality=modality,
            name="writer",
        )
        writer.check_targets(sources)  # existing or unwritable outputs: refused before any inference
        overrides = {"bundle_root": str(bundle)}
        if modality:
            overrides["modality"] = modality
        if backend:
            overrides["backend"] = backend
        # the SDK's model factory cannot load a bundle folder: give the operator the bundle's network
        app_context.models = BundleNetwork(bundle, overrides)
        weights = bundle / "models" / "model.pt"  # what BundleNetwork loads (model.ts where it is missing)
        loader = RestorationImageLoader(
            self,
            CountCondition(self, len(sources)),
            sources=sources,
            weights_path=weights if weights.is_file() else None,
            settings=_pixel_settings(bundle, overrides),
            name="loader",
        )
        restore = RestorationBundleInferenceOperator(
            self,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", Image, IOType.IN_MEMORY)],
            app_context=app_context,
            bundle_config_names=BundleConfigNames(config_names=["inference"]),
            bundle_path=bundle,
            config_overrides=overrides,
            name="restore",
        )
        self.add_flow(loader, restore, {("image", "image")})
        self.add_flow(loader, writer, {("source", "source"), ("record", "record")})
        self.add_flow(restore, writer, {("pred", "image")})


def _pixel_settings(bundle: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The inference config's settings that change the pixels, with the application's overrides: what each
    output's record holds, as ``monai.bundle run`` records them."""
    from scripts.workflows.provenance import config_settings

    return config_settings(parser=inference_parser(bundle, overrides))


def _user_error(error: BaseException) -> BaseException | None:
    """The bundle's user error (a bad input, named in one line) in ``error``'s chain, if the bundle is loaded."""
    try:
        from scripts.errors import find_user_error  # the bundle's (its folder is on sys.path once composed)
    except ImportError:
        return None
    return find_user_error(error)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse this application's own options, then run it with the SDK's (``-i``, ``-o``, ``-m``, ``-l``).

    Args:
        argv: the full command line, program name first (default: ``sys.argv``).

    Returns:
        0 when every input was restored and written, 1 otherwise (the errors are logged).
    """
    argv = list(sys.argv if argv is None else argv)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--modality", default=os.environ.get(MODALITY_ENV) or None)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--output-format", choices=["auto", "nifti", "dicom"], default="auto")
    parser.add_argument("--backend", default=None)  # checked by the bundle: one error line for a wrong value
    own, rest = parser.parse_known_args(argv[1:])
    # Holoscan drops the first item (the interpreter) and gives the SDK's parser the rest, program name first.
    options = {"modality": own.modality, "overwrite": own.overwrite, "output_format": own.output_format}
    options["backend"] = own.backend
    app = AMIRRestorationApp([sys.executable, argv[0], *rest], **options)
    try:
        app.run()
    except Exception as e:  # an input the bundle refuses stops the SDK's graph: say which, in one line
        user_error = _user_error(e)
        if user_error is None:
            raise
        written = len(app.writer.written) if app.writer is not None else 0
        sys.stderr.write(f"error: {user_error} ({written} of {len(app.sources)} inputs restored before it)\n")
        return 1
    if app.compose_error is not None:
        user_error = _user_error(app.compose_error)
        if user_error is not None:
            sys.stderr.write(f"error: {user_error}\n")
        else:
            logger.error(f"the application could not start: {app.compose_error!r}")
        return 1
    written = len(app.writer.written) if app.writer is not None else 0
    if written != len(app.sources):
        logger.error(f"only {written} of {len(app.sources)} inputs were restored; see the errors above.")
        return 1
    return 0
