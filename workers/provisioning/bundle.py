"""What travels to a host: this project as a wheel, and the workspace as an archive.

The project wheel is built from the copy of the project this machine runs (the files
of its packages and its metadata), so a host runs exactly the same code as
the tuner, offline and without build tools. The workspace archive leaves out what
never belongs on a worker: version-control folders, virtual environments, caches and
the local state folder (``.tuner``, which holds generated passwords). A
``.tunerignore`` file in the workspace adds more patterns (``fnmatch``, one a line).

Both come with a fingerprint of their content, so provisioning again uploads and
installs nothing when nothing changed.
"""

from __future__ import annotations

import base64
import csv
import fnmatch
import functools
import gzip
import hashlib
import importlib.metadata
import importlib.util
import io
import os
import re
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from broker.errors import ConfigError

DISTRIBUTION = "gpu-tuner"
PACKAGES = ("broker", "tuner", "workers", "sdk")
"""The project's top-level packages (``[tool.setuptools.packages.find]``)."""

EXCLUDED_DIRS = frozenset({
    ".git", ".hg", ".svn", ".venv", "venv", "__pycache__", ".tuner", ".mypy_cache",
    ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints", "node_modules", ".idea",
    ".vscode", ".tox", ".nox", "test-artifacts",
})
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
IGNORE_FILE = ".tunerignore"
MAX_WORKSPACE_BYTES = 512 * 1024 * 1024
"""A workspace archive larger than this is refused: ship big data another way (a shared
file system, a download in the tuning script) or use a ``git+URL`` workspace."""


@dataclass(frozen=True)
class Artifact:
    """A file to upload: its name, bytes and a fingerprint of its content."""

    filename: str
    data: bytes
    fingerprint: str


# -- the project -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def project_wheel() -> Artifact:
    """A ``py3-none-any`` wheel of the project as this machine runs it."""
    metadata, entry_points = _metadata()
    version = re.search(r"^Version: (.+)$", metadata, re.M)
    if version is None:
        raise ConfigError(f"cannot tell the version of {DISTRIBUTION} from its metadata")
    name = DISTRIBUTION.replace("-", "_")
    dist_info = f"{name}-{version.group(1).strip()}.dist-info"
    files: list[tuple[str, bytes]] = []
    for package in PACKAGES:
        root = _package_dir(package)
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and \
                    not path.name.endswith(EXCLUDED_SUFFIXES):
                files.append((f"{package}/{path.relative_to(root).as_posix()}",
                              path.read_bytes()))
    fingerprint = hashlib.sha256()
    for arcname, data in files + [("METADATA", metadata.encode())]:
        fingerprint.update(arcname.encode() + b"\0" + hashlib.sha256(data).digest())
    wheel_meta = ("Wheel-Version: 1.0\nGenerator: gpu-tuner provisioning\n"
                  "Root-Is-Purelib: true\nTag: py3-none-any\n")
    files += [(f"{dist_info}/METADATA", metadata.encode()),
              (f"{dist_info}/WHEEL", wheel_meta.encode())]
    if entry_points:
        files.append((f"{dist_info}/entry_points.txt", entry_points.encode()))
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for arcname, data in files:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        writer.writerow([arcname, f"sha256={digest.decode()}", len(data)])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    files.append((f"{dist_info}/RECORD", record.getvalue().encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for arcname, data in files:
            info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(info, data)
    filename = f"{name}-{version.group(1).strip()}-py3-none-any.whl"
    return Artifact(filename, buffer.getvalue(), fingerprint.hexdigest())


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        raise ConfigError(f"cannot locate the {package} package to ship it")
    return Path(spec.origin).resolve().parent


def _metadata() -> tuple[str, str]:
    """The project's METADATA and entry points: from the ``pyproject.toml`` next to the
    packages when the project runs from a source tree (the truth for the files shipped;
    an installed copy's metadata, or a stale ``*.egg-info`` in the tree, may lag behind
    and would make the wheel depend on the working folder), else from the installed
    distribution."""
    pyproject = _package_dir(PACKAGES[0]).parent / "pyproject.toml"
    if pyproject.is_file():
        return _metadata_from_pyproject(pyproject)
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
        metadata = dist.read_text("METADATA")
    except importlib.metadata.PackageNotFoundError:
        metadata = None
    if not metadata:
        raise ConfigError(f"{DISTRIBUTION} is neither installed nor a source tree: "
                          "pip install it first")
    return metadata, dist.read_text("entry_points.txt") or ""


def _metadata_from_pyproject(pyproject: Path) -> tuple[str, str]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]  # (a dependency there)
    try:
        project = tomllib.loads(pyproject.read_text())["project"]
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"cannot read the project metadata from {pyproject}: {exc}") from None
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}",
             f"Version: {project['version']}",
             f"Requires-Python: {project.get('requires-python', '>=3.10')}"]
    lines += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    scripts = project.get("scripts", {})
    entry_points = "[console_scripts]\n" + "".join(
        f"{k} = {v}\n" for k, v in scripts.items()) if scripts else ""
    return "\n".join(lines) + "\n", entry_points


# -- the workspace -------------------------------------------------------------------------------


def workspace_archive(folder: Path) -> Artifact:
    """A ``.tar.gz`` of ``folder`` without the excluded files; :class:`ConfigError` if
    the folder is missing or the archive would exceed :data:`MAX_WORKSPACE_BYTES`."""
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"workspace {folder} is not a folder")
    patterns = _ignore_patterns(folder)
    fingerprint = hashlib.sha256()
    buffer = io.BytesIO()
    total = 0
    # mtime=0 in the gzip header: the same content gives the same bytes (Ansible's copy
    # then sees nothing changed)
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=6, mtime=0) as packed, \
            tarfile.open(fileobj=packed, mode="w") as tar:
        for path in _walk(folder, patterns):
            rel = path.relative_to(folder).as_posix()
            data = path.read_bytes()
            total += len(data)
            if total > MAX_WORKSPACE_BYTES:
                raise ConfigError(
                    f"workspace {folder} holds more than {MAX_WORKSPACE_BYTES >> 20} MB: list "
                    f"data and outputs in {IGNORE_FILE}, or use a git+URL workspace")
            executable = os.access(path, os.X_OK)
            fingerprint.update(rel.encode() + b"\0" + bytes([executable]) +
                               hashlib.sha256(data).digest())
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mode = 0o755 if executable else 0o644
            info.mtime = int(path.stat().st_mtime)
            tar.addfile(info, io.BytesIO(data))
    return Artifact("workspace.tar.gz", buffer.getvalue(), fingerprint.hexdigest())


def file_fingerprint(folder: Path, name: str) -> str | None:
    """SHA-256 of ``folder/name``, or ``None`` when it does not exist."""
    path = folder / name
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _ignore_patterns(folder: Path) -> list[str]:
    try:
        lines = (folder / IGNORE_FILE).read_text().splitlines()
    except OSError:
        return []
    return [line.strip().rstrip("/") for line in lines
            if line.strip() and not line.lstrip().startswith("#")]


def _ignored(rel: str, name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def _walk(folder: Path, patterns: list[str]) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        base = Path(root)
        dirs[:] = sorted(
            d for d in dirs
            if d not in EXCLUDED_DIRS and not (base / d / "pyvenv.cfg").exists()
            and not (base / d).is_symlink()
            and not _ignored((base / d).relative_to(folder).as_posix(), d, patterns))
        for name in sorted(files):
            path = base / name
            rel = path.relative_to(folder).as_posix()
            if name.endswith(EXCLUDED_SUFFIXES) or _ignored(rel, name, patterns):
                continue
            if path.is_file():  # follows file symlinks; skips sockets, broken links
                out.append(path)
    return out
