"""The MAP recipe of deploy/README.md up to the packager: its staging commands (run from the README's text), the
packager's own environment (holoscan-cli 4.2.0 from PyPI) and ``monai-deploy package --help``, and the versions it
names agreeing with deploy/requirements.txt. Not run: the packager's manifest download (network beyond PyPI) and
the container build (Docker)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "deploy" / "README.md"


def recipe() -> list[str]:
    """The commands of the README's MAP section (continuation lines joined, comments left out)."""
    section = README.read_text().split("### Packaging a MAP", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")]
    return [re.sub(r"\s+", " ", line).strip() for line in lines]


def _pin(path: Path, name: str) -> str:
    (version,) = re.findall(rf"^{re.escape(name)}==(\S+)", path.read_text(), re.M)
    return version


def test_recipe_versions_agree_with_the_application():
    commands = recipe()
    install, package = commands[0], next(c for c in commands if "monai-deploy package" in c)
    assert install.endswith('pip install "holoscan-cli==4.2.0"')  # the last release with the MAP packager
    sdk = _pin(REPO / "deploy" / "requirements.txt", "holoscan-cu13")
    download = next(c for c in commands if "pip download" in c)
    assert f'"holoscan-cu13=={sdk}"' in download and "--python-version 3.12" in download
    wheel = re.search(r"--holoscan-sdk-file (\S+)", package).group(1)
    assert Path(wheel).name.startswith(f"holoscan_cu13-{sdk}-cp312-cp312-")  # the SDK the app is tested with
    assert "--sdk-version 4.2.0" in package  # the only SDK version holoscan-cli 4.2.0's manifest knows
    assert "-m build/map/models" in package and "-c deploy/app/app.yaml" in package


def test_app_yaml_has_what_the_packager_reads():
    config = yaml.safe_load((REPO / "deploy" / "app" / "app.yaml").read_text())
    application = config["application"]
    assert application["title"] and re.fullmatch(r"\d+\.\d+\.\d+", str(application["version"]))
    assert application["inputFormats"] == ["file"] and application["outputFormats"] == ["file"]
    assert {"cpu", "gpu", "memory", "gpuMemory"} <= set(config["resources"])
    package = next(c for c in recipe() if "monai-deploy package" in c)
    assert f"-t amir-restoration:{application['version']}" in package


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    """The README's staging commands, run in a folder that sees the repository's files (build/ is written there)."""
    root = tmp_path_factory.mktemp("map")
    for name in ("requirements.txt", "deploy", "bundle"):
        (root / name).symlink_to(REPO / name)
    staging = [c for c in recipe() if c.startswith(("rm -rf build/map", "cat ", "cp ", "find build/map"))]
    assert len(staging) == 4, staging
    subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(staging)], cwd=root, check=True, timeout=120)
    return root / "build" / "map"


def test_staging_gives_the_app_its_requirements_and_one_clean_bundle(staged):
    lines = (staged / "app" / "requirements.txt").read_text().split()
    assert "holoscan-cu13==4.6.0" in lines and "monai-deploy-app-sdk==4.0.0" in lines and "torch==2.13.0" in lines
    names = [re.split(r"[\[=]", line)[0].lower() for line in lines]
    assert len(names) == len(set(names)), "a package pinned twice"
    assert (staged / "app" / "__main__.py").is_file()
    # the MAP's models folder holds one bundle folder, as deploy/app's find_bundle accepts it
    assert [p.name for p in (staged / "models").iterdir()] == ["bundle"]
    bundle_files = {p.relative_to(staged / "models" / "bundle") for p in (staged / "models" / "bundle").rglob("*")}
    assert Path("models/model.pt") in bundle_files and Path("configs/inference.json") in bundle_files
    assert not [p for p in bundle_files if p.parts[0] == "runs" or "__pycache__" in p.parts]


@pytest.fixture(scope="module")
def packager(tmp_path_factory) -> Path:
    """The README's first command (the packager's environment), in a temporary folder (needs PyPI)."""
    root = tmp_path_factory.mktemp("package")
    install = recipe()[0].replace(".venv-package", str(root / ".venv-package"))
    assert install.startswith("python3.11 -m venv ")
    install = install.replace("python3.11", sys.executable if shutil.which("python3.11") is None else "python3.11", 1)
    subprocess.run(["bash", "-euo", "pipefail", "-c", install], check=True, timeout=300, capture_output=True)
    return root / ".venv-package" / "bin"


def test_packager_environment_has_monai_deploy_package(packager):
    help_text = subprocess.run(
        [packager / "monai-deploy", "package", "--help"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    # every option the README's command gives
    package = next(c for c in recipe() if "monai-deploy package" in c)
    for option in re.findall(r"\s(--?[a-z][a-z-]*)", package):
        assert re.search(rf"(^|[\s,\[]){re.escape(option)}[\s,\]]", help_text), option
    version = subprocess.run(
        [packager / "python", "-c", "import importlib.metadata as m; print(m.version('holoscan-cli'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert version == "4.2.0"
