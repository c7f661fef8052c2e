"""Why demo weights differ on clean MRI: the background level they restore, with and without Rician noise.

Demo set version 2 gave its MNI152 T1 template slices Rician noise of std 60, whose background floor is about
60 * sqrt(pi / 2) = 75 scanner units, and weights trained on it restore that floor on clean MRI too; version 3 draws
each slice's std from 0 to 60 (``scripts.data.corpus``). This measures, on template slices between the
corpus's training positions (axial, at 0.26 / 0.38 / 0.50 / 0.62 of the brain's extent), clean and with that
noise, what each weights file restores from the 4x k-space crop: the mean of the restored background (where the
clean template is 0), the RMSE there and inside the head, and the slice's PSNR (data range of the HQ slice).

Usage (repository root)::

    .venv/bin/python bench/mri_background.py NAME=CKPT[:DIM] ...   # DIM 16 for the 0.1.0 weights, else 24
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from monai.transforms import RandRicianNoise
from nilearn.datasets import load_mni152_template

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))
from scripts.data import corpus  # noqa: E402
from scripts.networks import AMIR  # noqa: E402
from scripts.transforms.kspace import KSpaceCrop  # noqa: E402
from scripts.weights import load_weights  # noqa: E402

FRACTIONS = (0.26, 0.38, 0.50, 0.62)
MRI_MAX = 4095.0


def template_slices() -> list[np.ndarray]:
    """Axial MNI152 T1 slices (scanner units, peak 3000) between the corpus's training positions."""
    t1 = load_mni152_template(resolution=1)
    volume = np.asarray(t1.dataobj, dtype=np.float32) * corpus.MRI_PEAK
    mask = volume > 0.1 * corpus.MRI_PEAK
    return [corpus._volume_slice(volume, t1.affine, "axial", f, mask)[0] for f in FRACTIONS]


def measure(network: torch.nn.Module, hq: np.ndarray, background: np.ndarray) -> dict[str, float]:
    """Restore the 4x k-space crop of ``hq`` and measure it against ``hq``."""
    target = torch.from_numpy(np.ascontiguousarray(hq))[None]
    lq = KSpaceCrop(0.25)(target)
    with torch.no_grad():
        out = network((lq / MRI_MAX).clamp(0, 1)[None])[0, 0] * MRI_MAX
    error = (out - target[0]).numpy()
    mse = float(np.mean(error**2))
    return {
        "bg_mean": float(out.numpy()[background].mean()),
        "bg_rmse": float(np.sqrt(np.mean(error[background] ** 2))),
        "head_rmse": float(np.sqrt(np.mean(error[~background] ** 2))),
        "psnr": 10 * np.log10(float(np.ptp(hq)) ** 2 / mse),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", nargs="+", help="NAME=CKPT[:DIM] (DIM: the AMIR width, 24 for the demo preset)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    clean = template_slices()
    rician = []
    for i, image in enumerate(clean):
        noise = RandRicianNoise(prob=1.0, std=corpus.MNI_NOISE_STD, sample_std=False, relative=False)
        noise.set_random_state(100 + i)
        rician.append(np.asarray(noise(image[None]))[0].astype(np.float32))
    print("| weights | input | background mean | background RMSE | head RMSE | PSNR |")
    print("|---|---|---|---|---|---|")
    for spec in args.weights:
        name, _, path = spec.partition("=")
        path, _, dim = path.partition(":")
        network = AMIR(dim=int(dim or 24), num_blocks=(1, 2, 2, 2), num_refinement_blocks=1)
        load_weights(network, path)
        network.eval()
        for label, images in (("clean", clean), ("Rician std 60", rician)):
            rows = [measure(network, hq, c == 0) for hq, c in zip(images, clean, strict=True)]
            mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            print(
                f"| {name} | {label} | {mean['bg_mean']:.1f} | {mean['bg_rmse']:.1f} | {mean['head_rmse']:.1f} "
                f"| {mean['psnr']:.2f} |"
            )


if __name__ == "__main__":
    main()
