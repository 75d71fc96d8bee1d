"""The provisioning steps on one host, each idempotent, over one SSH connection.

:func:`prepare` checks Python, creates the virtual environment, installs the project,
ships the workspace, installs its requirements and detects the GPUs; each step is
skipped when the fingerprint recorded in ``<home>/installed.json`` says it is done.
:func:`agent` runs :mod:`workers.provisioning.agent` on the host (start, stop, status).
"""

from __future__ import annotations

import base64
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from broker import gpus as gpu_query
from broker.gpus import Gpu
from workers.provisioning.bundle import Artifact
from workers.provisioning.errors import ProvisionError
from workers.provisioning.hosts import Host
from workers.provisioning.layout import Layout
from workers.provisioning.ssh import Remote, quote

MIN_PYTHON = (3, 10)
INSTALL_TIMEOUT_S = 3600.0
"""pip may build wheels on a fresh GPU host; give it an hour (seconds)."""

NVIDIA_SMI = "nvidia-smi --query-gpu=index,name,memory.total --format=csv"

_PYTHON_CHECK = """\
import json, sys
try:
    import ensurepip, venv
    ok = True
except ImportError:
    ok = False
print(json.dumps({"version": list(sys.version_info[:3]), "venv": ok,
                  "executable": sys.executable}))
"""


@dataclass(frozen=True)
class Workspace:
    """What to ship: a local folder's archive, or a git repository the host clones."""

    archive: Artifact | None = None
    git_url: str | None = None
    git_ref: str = "HEAD"

    @classmethod
    def parse_git(cls, spec: str) -> Workspace:
        """``git+URL`` or ``git+URL@REF`` (branch, tag or commit)."""
        url = spec[len("git+"):]
        base, sep, ref = url.rpartition("@")
        if not sep or not ref or re.search(r"[/:]", ref):  # ssh://git@host/..., git@host:...
            base, ref = url, "HEAD"
        return cls(git_url=base, git_ref=ref)


@dataclass
class Prepared:
    """What :func:`prepare` found and did on one host."""

    host: Host
    layout: Layout
    python: str
    gpus: list[Gpu]
    fingerprints: dict[str, str]
    changed: list[str] = field(default_factory=list)


def resolve_root(remote: Remote) -> Layout:
    """The host's ``tuner_home`` as an absolute path (``~`` is the login user's home)."""
    root = remote.host.remote_dir
    if root == "~" or root.startswith("~/"):
        home = remote.run('printf %s "$HOME"', step="connect").stdout.strip()
        root = posixpath.join(home, root[2:]) if root != "~" else home
    if not root.startswith("/"):
        raise ProvisionError(remote.host.name, "connect",
                             f"tuner_home must be absolute or start with ~/, got {root!r}")
    return Layout(posixpath.normpath(root))


def prepare(remote: Remote, *, project: Artifact | str, workspace: Workspace,
            env_text: str, pip_args: tuple[str, ...] = (),
            install_timeout_s: float = INSTALL_TIMEOUT_S) -> Prepared:
    """Bring the host up to date with this machine's project, workspace and settings."""
    host = remote.host
    layout = resolve_root(remote)
    python = _check_python(remote)
    remote.run(quote("mkdir", "-p", layout.root, layout.incoming, layout.logs, layout.run,
                     layout.state) + " && " + quote("chmod", "700", layout.root), step="setup")
    installed = _read_installed(remote, layout)
    step_changes: list[str] = []

    def save() -> None:
        remote.put_bytes(json.dumps(installed, indent=1).encode(), layout.installed,
                         step="setup", mode=0o600)

    venv_id = f"{python}|{host.python}|site={int(host.system_site_packages)}"
    if installed.get("venv") != venv_id or not _venv_works(remote, layout):
        command = [host.python, "-m", "venv", "--clear"]
        if host.system_site_packages:
            command.append("--system-site-packages")
        remote.run(quote(*command, layout.venv), step="venv", timeout=600)
        installed = {"venv": venv_id}
        save()
        step_changes.append("venv")

    pip = quote(layout.python, "-m", "pip", "install", "--disable-pip-version-check",
                "--no-input", "--quiet", *pip_args)
    project_id = project if isinstance(project, str) else project.fingerprint
    if installed.get("project") != project_id:
        if isinstance(project, str):
            remote.run(f"{pip} --upgrade {quote(project)}", step="install",
                       timeout=install_timeout_s)
        else:
            wheel = posixpath.join(layout.incoming, project.filename)
            remote.put_bytes(project.data, wheel, step="install")
            # The exact copy this machine runs (same version number, other content:
            # force it), then whatever of its dependencies is missing.
            remote.run(f"{pip} --force-reinstall --no-deps {quote(wheel)} && {pip} "
                       f"{quote(wheel)} && rm -f {quote(wheel)}",
                       step="install", timeout=install_timeout_s)
        installed["project"] = project_id
        save()
        step_changes.append("project")

    workspace_id = _ship_workspace(remote, layout, workspace, installed.get("workspace"))
    if installed.get("workspace") != workspace_id:
        installed["workspace"] = workspace_id
        save()
        step_changes.append("workspace")

    requirements = posixpath.join(layout.workspace, "requirements.txt")
    requirements_id = _remote_sha256(remote, layout, requirements)
    if requirements_id and installed.get("requirements") != requirements_id:
        remote.run(f"cd {quote(layout.workspace)} && {pip} -r requirements.txt",
                   step="requirements", timeout=install_timeout_s)
        installed["requirements"] = requirements_id
        save()
        step_changes.append("requirements")

    remote.put_bytes(env_text.encode(), layout.env_file, step="settings", mode=0o600)
    gpus = detect_gpus(remote)
    fingerprints = {k: str(installed.get(k, "")) for k in
                    ("venv", "project", "workspace", "requirements")}
    return Prepared(host, layout, python, gpus, fingerprints, step_changes)


def detect_gpus(remote: Remote) -> list[Gpu]:
    """The host's GPUs per ``nvidia-smi``; none when it has no ``nvidia-smi``. A
    ``nvidia-smi`` that fails (driver trouble) is an error, not a CPU-only host."""
    found = remote.run("command -v nvidia-smi", step="gpus", warn=True)
    if found.exited != 0:
        return []
    return gpu_query.parse(remote.run(NVIDIA_SMI, step="gpus", timeout=60).stdout)


def agent(remote: Remote, layout: Layout, command: str, payload: Any = None, *,
          step: str, timeout: float = 120.0) -> dict[str, Any]:
    """Run the on-host agent; its JSON answer."""
    words = [layout.python, "-m", "workers.provisioning.agent", layout.root, command]
    if payload is not None:
        words.append(base64.b64encode(json.dumps(payload).encode()).decode())
    result = remote.run(quote(*words), step=step, timeout=timeout)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ProvisionError(remote.host.name, step, "the agent answered something else than "
                             "JSON", output=result.stdout[-2000:]) from None


def tail_file(remote: Remote, path: str, size: int = 3000) -> str:
    """The last ``size`` bytes of a file on the host ('' if it cannot be read)."""
    result = remote.run(quote("tail", "-c", str(size), path), step="logs", warn=True)
    return result.stdout if result.exited == 0 else ""


# -- steps ---------------------------------------------------------------------------------------


def _check_python(remote: Remote) -> str:
    host = remote.host
    result = remote.run(quote(host.python, "-c", _PYTHON_CHECK), step="python", warn=True)
    if result.exited == 127:
        raise ProvisionError(host.name, "python",
                             f"{host.python} not found on the host: install Python "
                             f"{'.'.join(map(str, MIN_PYTHON))}+ or name it with --python / "
                             "tuner_python")
    if result.exited != 0:
        raise ProvisionError(host.name, "python", f"{host.python} failed (status "
                             f"{result.exited})", output=result.stderr[-2000:])
    info = json.loads(result.stdout.strip().splitlines()[-1])
    version = tuple(info["version"])
    text = ".".join(map(str, version))
    if version < MIN_PYTHON:
        raise ProvisionError(host.name, "python", f"{info['executable']} is Python {text}; "
                             f"this project needs {'.'.join(map(str, MIN_PYTHON))}+")
    if not info["venv"]:
        raise ProvisionError(host.name, "python", f"{info['executable']} cannot create virtual "
                             "environments (no ensurepip): install python3-venv")
    return text


def _venv_works(remote: Remote, layout: Layout) -> bool:
    return remote.run(quote(layout.python, "-c", "import pip"), step="venv",
                      warn=True).exited == 0


def _read_installed(remote: Remote, layout: Layout) -> dict[str, Any]:
    data = remote.read_bytes(layout.installed, step="setup")
    try:
        return json.loads(data) if data else {}
    except ValueError:
        return {}


def _remote_sha256(remote: Remote, layout: Layout, path: str) -> str | None:
    code = ("import hashlib, sys\ntry:\n    print(hashlib.sha256(open(sys.argv[1], 'rb')"
            ".read()).hexdigest())\nexcept FileNotFoundError:\n    print('')\n")
    out = remote.run(quote(layout.python, "-c", code, path), step="requirements").stdout
    return out.strip() or None


def _ship_workspace(remote: Remote, layout: Layout, workspace: Workspace,
                    current: str | None) -> str:
    if workspace.archive is not None:
        wanted = f"archive:{workspace.archive.fingerprint}"
        if current == wanted and _exists(remote, layout.workspace):
            return wanted
        archive = posixpath.join(layout.incoming, workspace.archive.filename)
        remote.put_bytes(workspace.archive.data, archive, step="workspace")
        remote.run(quote(layout.python, "-m", "workers.provisioning.agent", layout.root,
                         "unpack", archive, layout.workspace), step="workspace")
        return wanted
    assert workspace.git_url is not None
    new = layout.workspace + ".new"
    script = " && ".join([
        quote("rm", "-rf", new), quote("git", "init", "-q", new),
        quote("git", "-C", new, "remote", "add", "origin", workspace.git_url),
        quote("git", "-C", new, "fetch", "-q", "--depth", "1", "origin", workspace.git_ref),
        quote("git", "-C", new, "checkout", "-q", "--detach", "FETCH_HEAD"),
        quote("git", "-C", new, "rev-parse", "HEAD"),
    ])
    head = remote.run(script, step="workspace", timeout=1800).stdout.strip().splitlines()[-1]
    wanted = f"git:{workspace.git_url}@{head}"
    if current == wanted and _exists(remote, layout.workspace):
        remote.run(quote("rm", "-rf", new), step="workspace")
        return wanted
    old = layout.workspace + ".old"
    remote.run(" && ".join([quote("rm", "-rf", old),
                            f"{{ [ ! -e {quote(layout.workspace)} ] || "
                            f"mv {quote(layout.workspace)} {quote(old)}; }}",
                            quote("mv", new, layout.workspace), quote("rm", "-rf", old)]),
               step="workspace")
    return wanted


def _exists(remote: Remote, path: str) -> bool:
    return remote.run(quote("test", "-d", path), step="workspace", warn=True).exited == 0
