"""Write the bundle as a MONAI model zoo pull request holds it: ``models/<name>/`` without its weights.

The zoo's pre-commit refuses files over 1 MB, so the weights stay out of the tree: ``large_files.yml`` names each
one with the address its CI downloads it from and its sha256. The tree holds ``LICENSE``, ``large_files.yml``,
``configs/``, ``docs/`` and ``scripts/`` (no ``models/``, run folders, caches or ``__pycache__``). Before writing,
every ``large_files.yml`` entry is checked against the file it names (present, same sha256).

Usage, from the bundle folder::

    python -m scripts.zoo --out DIR        # writes DIR/models/amir_restoration/

Copy ``DIR/models/amir_restoration`` into a clone of the model zoo's ``models/`` folder. The urls must point at the
published weights first (see ``large_files.yml``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from .errors import UserInputError, install_cli_excepthook
from .weights import file_sha256

__all__ = ["ZOO_NAME", "MAX_FILE_BYTES", "PLACEHOLDER_HOST", "read_large_files", "check_large_files", "write_zoo_tree"]

logger = logging.getLogger(__name__)

#: The bundle's folder name in the zoo (its names are lower case with underscores).
ZOO_NAME = "amir_restoration"
#: The zoo's pre-commit limit (``check-added-large-files --maxkb=1024``).
MAX_FILE_BYTES = 1024 * 1024
#: Host of the placeholder urls in ``large_files.yml`` while the weights are not published.
PLACEHOLDER_HOST = "weights-not-yet-published.invalid"
#: What the zoo's tree holds: the bundle's files and folders (everything else, e.g. ``models/``, is left out).
TREE_ENTRIES = ("LICENSE", "large_files.yml", "configs", "docs", "scripts")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


def read_large_files(bundle_root: str | os.PathLike) -> list[dict[str, str]]:
    """The entries of ``large_files.yml`` (``path``, ``url``, ``hash_val``, ``hash_type``).

    Raises:
        UserInputError: the file is missing or not in the zoo's format.
    """
    listing = Path(bundle_root) / "large_files.yml"
    try:
        entries = yaml.safe_load(listing.read_text())["large_files"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise UserInputError(f"{listing}: not a readable large_files.yml ({e}); see the zoo's format") from None
    keys = {"path", "url", "hash_val", "hash_type"}
    if not isinstance(entries, list) or not all(isinstance(e, dict) and keys <= set(e) for e in entries):
        raise UserInputError(f"{listing}: every entry of large_files needs {sorted(keys)}")
    return entries


def check_large_files(bundle_root: str | os.PathLike) -> list[dict[str, str]]:
    """Check that every ``large_files.yml`` entry is a sha256 of the file it names, and every weight file is listed.

    Returns:
        The entries.

    Raises:
        UserInputError: a file is missing, differs from its hash, or a ``models/`` file is not listed.
    """
    root = Path(bundle_root)
    entries = read_large_files(root)
    for entry in entries:
        path = root / entry["path"]
        if entry["hash_type"] != "sha256":
            raise UserInputError(f"{root / 'large_files.yml'}: {entry['path']}: give hash_type sha256")
        if not path.is_file():
            raise UserInputError(f"{path}: listed in large_files.yml but missing; restore it or remove its entry")
        if file_sha256(path) != entry["hash_val"]:
            raise UserInputError(
                f"{path}: its sha256 differs from large_files.yml; put the new hash_val there (and upload the file)"
            )
    listed = {Path(e["path"]) for e in entries}
    shipped = {p.relative_to(root) for p in (root / "models").rglob("*.pt")} if (root / "models").is_dir() else set()
    if shipped - listed:
        raise UserInputError(f"{root}: weights not in large_files.yml: {sorted(map(str, shipped - listed))}")
    return entries


def write_zoo_tree(bundle_root: str | os.PathLike, out: str | os.PathLike, name: str = ZOO_NAME) -> Path:
    """Write ``out/models/<name>/``, the zoo's tree of the bundle (see the module docstring).

    Args:
        bundle_root: the bundle folder.
        out: where the tree is written; ``out/models/<name>`` must not exist yet.
        name: the bundle's folder name in the zoo.

    Returns:
        The written ``out/models/<name>`` folder.

    Raises:
        UserInputError: ``out/models/<name>`` exists, ``large_files.yml`` does not match the weights, or a file of
            the tree is over the zoo's 1 MB limit. Nothing is written then.
    """
    root, target = Path(bundle_root), Path(out) / "models" / name
    if target.exists():
        raise UserInputError(f"{target}: exists; give another --out (the zoo tree is never written over a folder)")
    entries = check_large_files(root)
    placeholders = [e["path"] for e in entries if PLACEHOLDER_HOST in e["url"]]
    if placeholders:
        logger.warning(f"large_files.yml: {placeholders} have placeholder urls; publish them before a pull request")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))  # filled, then renamed: no half tree
    try:
        for entry in TREE_ENTRIES:
            source = root / entry
            if source.is_dir():
                shutil.copytree(source, tmp / entry, ignore=_IGNORED)
            else:
                shutil.copy2(source, tmp / entry)
        large = [str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file() and p.stat().st_size > MAX_FILE_BYTES]
        if large:
            raise UserInputError(f"{root}: over the zoo's 1 MB limit: {large}; list them in large_files.yml instead")
        os.chmod(tmp, 0o755)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def main(argv: Sequence[str] | None = None) -> Path:
    """Command line: ``python -m scripts.zoo --out DIR [--name NAME] [--bundle_root DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to write models/<name>/ into")
    parser.add_argument("--name", default=ZOO_NAME, help="the bundle's folder name in the zoo")
    parser.add_argument("--bundle_root", default=str(Path(__file__).resolve().parents[1]), help="the bundle folder")
    args = parser.parse_args(argv)
    target = write_zoo_tree(args.bundle_root, args.out, args.name)
    print(target)
    return target


if __name__ == "__main__":
    install_cli_excepthook()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    main()
