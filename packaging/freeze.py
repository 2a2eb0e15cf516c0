"""What the frozen app is made of: read by ``vit-desktop.spec`` (and by the tests).

Plain Python, no PyInstaller import, so the tests can check it without building.

The source tree installs ``resources/`` as the ``vit_desktop.resources`` package (see
``[tool.setuptools.package-dir]``); PyInstaller finds modules by their path on disk and
does not see that mapping (nor an editable install), so ``stage()`` lays the package out
as the wheel does — ``vit_desktop/resources/...`` — in the build folder, and the spec
analyses that copy.  The data files are the same globs as the wheel's package data.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
APP_NAME = "ViT Desktop"
APP_ID = "io.github.vitdesktop.ViTDesktop"  # same as vit_desktop.ui.app_icon.APP_ID
CLI_NAME = "vit-desktop"  # console executable: the command line and --self-test
GUI_NAME = "vit-desktop-gui"  # windowed executable: what the desktop launches
FOLDER_NAME = "vit-desktop"  # dist/vit-desktop/

# Never imported by the app, or only behind a try/except: left out to keep the folder
# smaller.  triton is torch.compile's GPU compiler (about 1 GB); the app runs eager.
EXCLUDES = [
    "tkinter",
    "_tkinter",
    "matplotlib",
    "IPython",
    "jupyter_client",
    "notebook",
    "pytest",
    "_pytest",
    "hypothesis",
    "pytestqt",
    "ruff",
    "triton",
    "transformers",
    "tokenizers",
    "hf_xet",  # huggingface_hub itself is needed (hf:ORG/NAME); the app turns Xet transfers off
    "tensorboard",
    "torch.utils.tensorboard",
    "pandas",
    "ray",  # `classify --engine ray` is for a pip install with the cluster extra
    "pyarrow",
    "scipy",
    "setuptools",
    "pip",
    "PyInstaller",
]

NATIVE_SUFFIXES = (".so", ".pyd", ".dll", ".dylib")
BY_PATH_PACKAGES = ["torchvision"]

# The Qt modules the app uses; PyInstaller's PySide6 hooks collect their plugins.
QT_MODULES = ["PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets", "PySide6.QtNetwork", "PySide6.QtSvg"]

MAC_DOCUMENT_TYPES = [
    {
        "CFBundleTypeName": "Image",
        "CFBundleTypeRole": "Viewer",
        "LSHandlerRank": "Alternate",
        "LSItemContentTypes": [
            "public.jpeg",
            "public.png",
            "org.webmproject.webp",
            "com.compuserve.gif",
            "com.microsoft.bmp",
            "public.tiff",
            "public.avif",
            "com.microsoft.ico",
            "com.truevision.tga-image",
            "public.jpeg-2000",
            "public.pbm",
        ],  # fmt: skip
    }
]


def resource_patterns() -> list[str]:
    """The wheel's package-data globs for ``vit_desktop.resources`` (from pyproject.toml)."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(cfg["tool"]["setuptools"]["package-data"]["vit_desktop.resources"])


def resource_files() -> list[Path]:
    """Every runtime asset the wheel ships, as paths under ``resources/``."""
    src = ROOT / "resources"
    files = {p for pattern in resource_patterns() for p in src.glob(pattern) if p.is_file()}
    return sorted(files)


def datas() -> list[tuple[str, str]]:
    """PyInstaller ``datas``: (source file, folder inside the app)."""
    src = ROOT / "resources"
    return [
        (str(p), str(Path("vit_desktop", "resources", p.parent.relative_to(src))).replace("\\", "/"))
        for p in resource_files()
    ]


def loaded_by_path(package: str) -> list[tuple[str, str]]:
    """PyInstaller ``binaries``: the shared libraries at the top of ``package`` that it loads
    by file name (torchvision's operators: ``torch.ops.load_library("_C_stable.so")``), which
    import analysis cannot see.  Without them ``torchvision.ops`` fails at start-up."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{package} is not installed in this environment")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return [
        (str(p), package) for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in NATIVE_SUFFIXES
    ]


def stage(dest: Path) -> Path:
    """Copy the Python package as the wheel lays it out; return the folder to analyse from."""
    if dest.exists():
        shutil.rmtree(dest)
    pkg = dest / "vit_desktop"
    shutil.copytree(ROOT / "vit_desktop", pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (pkg / "resources").mkdir()
    shutil.copy2(ROOT / "resources" / "__init__.py", pkg / "resources" / "__init__.py")
    return dest


def hidden_imports(staged: Path) -> list[str]:
    """Every module of the app: the command line imports most of them inside functions."""
    names = []
    for p in sorted((staged / "vit_desktop").rglob("*.py")):
        parts = list(p.relative_to(staged).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names + QT_MODULES


def icon_for(platform: str = sys.platform) -> str:
    icons = ROOT / "resources" / "icons"
    if platform == "win32":
        return str(icons / "vit-desktop.ico")
    if platform == "darwin":
        return str(icons / "vit-desktop.icns")
    return str(icons / "vit-desktop-256.png")


def version() -> str:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return cfg["project"]["version"]
