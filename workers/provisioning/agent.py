"""The remote half of provisioning: runs *on* a worker host, under its venv's Python.

    <home>/venv/bin/python -m workers.provisioning.agent <home> start <base64 JSON>
    <home>/venv/bin/python -m workers.provisioning.agent <home> stop [<base64 JSON names>]
    <home>/venv/bin/python -m workers.provisioning.agent <home> status
    <home>/venv/bin/python -m workers.provisioning.agent <home> unpack <archive> <dest> [--keep]

Each prints one JSON document on stdout. The agent keeps one record per worker it
started in ``<home>/run/<name>.json`` (pid, the process's start time, a fingerprint of
what it runs), which is what makes provisioning idempotent (a live worker with the same
fingerprint is left alone) and what ``stop`` stops: nothing it did not start.
Workers run as their own sessions with stdout/stderr appended to a per-slot log file,
so they outlive the SSH session that started them. Standard library only (besides the
pure :mod:`workers.provisioning.layout`): it must start fast and not import the worker.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from workers.provisioning.layout import Layout

STOP_GRACE_S = 20.0
"""SIGTERM makes a worker hand its running trial back; SIGKILL after this (seconds)."""

START_CHECK_S = 0.5
"""A worker that exits within this long after its start is reported as failed."""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        sys.stderr.write(__doc__ or "")
        return 2
    layout, command, rest = Layout(os.path.abspath(args[0])), args[1], args[2:]
    if command == "start":
        out = start(layout, _decode(rest[0]))
    elif command == "stop":
        out = stop(layout, _decode(rest[0]) if rest else None)
    elif command == "status":
        out = {"workers": status(layout)}
    elif command == "unpack":
        out = unpack(Path(rest[0]), Path(rest[1]), keep="--keep" in rest[2:])
    else:
        sys.stderr.write(f"unknown command {command!r}\n")
        return 2
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


def _decode(text: str) -> Any:
    return json.loads(base64.b64decode(text))


# -- workers -----------------------------------------------------------------------------


def start(layout: Layout, spec: dict[str, Any]) -> dict[str, Any]:
    """Make the workers in ``spec["workers"]`` run; leave live identical ones alone.

    Each entry: ``name``, ``slot``, ``gpu`` (or null), ``machine_type``, ``queue``,
    ``fingerprint`` and ``command`` (a shell command, or null for ``python -m workers``).
    """
    for folder in (layout.run, layout.logs, layout.state):
        os.makedirs(folder, exist_ok=True)
    env_file = _read_env_file(layout.env_file)
    results: list[dict[str, Any]] = []
    spawned: list[tuple[dict[str, Any], str]] = []
    wanted = {w["name"] for w in spec["workers"]}
    for worker in spec["workers"]:
        record = _record(layout, worker["name"])
        if record is not None and _alive(record):
            if record.get("fingerprint") == worker["fingerprint"]:
                results.append({**_public(record), "action": "running"})
                continue
            _terminate(record)
            action = "restarted"
        else:
            action = "started"
        try:
            spawned.append((_spawn(layout, worker, env_file), action))
        except OSError as exc:
            results.append({"name": worker["name"], "gpu": worker.get("gpu"),
                            "action": "failed", "error": f"cannot start: {exc}"})
    if spawned:
        time.sleep(START_CHECK_S)
    for record, action in spawned:
        if _alive(record):
            results.append({**_public(record), "action": action})
        else:
            results.append({**_public(record), "action": "failed",
                            "error": "exited at once", "log_tail": _tail(record["log"])})
    order = {w["name"]: i for i, w in enumerate(spec["workers"])}
    results.sort(key=lambda r: order.get(r["name"], len(order)))
    others = [_public(r) for r in _records(layout) if r["name"] not in wanted and _alive(r)]
    return {"workers": results, "others": others}


def stop(layout: Layout, names: list[str] | None) -> dict[str, Any]:
    """Stop the workers this agent started (all, or those named); never anything else."""
    stopped, not_running = [], []
    for record in _records(layout):
        if names is not None and record["name"] not in names:
            continue
        if _alive(record):
            _terminate(record)
            stopped.append(record["name"])
        else:
            not_running.append(record["name"])
        _remove_record(layout, record["name"])
    return {"stopped": stopped, "not_running": not_running}


def status(layout: Layout) -> list[dict[str, Any]]:
    """Every worker record, with whether its process is alive."""
    return [{**_public(r), "alive": _alive(r)} for r in _records(layout)]


def _spawn(layout: Layout, worker: dict[str, Any], env_file: dict[str, str]) -> dict[str, Any]:
    log_path = layout.worker_log(worker["slot"])
    gpu = worker.get("gpu")
    env = {**os.environ, **env_file,
           "TUNER_WORKER_NAME": worker["name"],
           "TUNER_MACHINE_TYPE": worker["machine_type"],
           "TUNER_WORKSPACE": layout.workspace,
           "TUNER_HOME": layout.state,
           "CUDA_VISIBLE_DEVICES": "" if gpu is None else str(gpu),
           "VIRTUAL_ENV": layout.venv,
           "PATH": os.pathsep.join([os.path.join(layout.venv, "bin"),
                                    os.environ.get("PATH", "/usr/bin:/bin")]),
           "PYTHONUNBUFFERED": "1"}
    env.pop("TUNER_GPU", None)
    if gpu is not None:
        env["TUNER_GPU"] = str(gpu)
    command = worker.get("command")
    argv: list[str] | str
    if command:
        argv = command
    else:
        argv = [layout.python, "-m", "workers", "--name", worker["name"],
                "--workspace", layout.workspace, "--worker-machine-type",
                worker["machine_type"]]
        if gpu is not None:
            argv += ["--gpu", str(gpu)]
    with open(log_path, "ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"--- {stamp} starting {worker['name']} (queue {worker['queue']}, "
                  f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']!r})\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv, shell=bool(command), cwd=layout.workspace, env=env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True)
    record = {"name": worker["name"], "slot": worker["slot"], "gpu": gpu,
              "machine_type": worker["machine_type"], "queue": worker["queue"],
              "fingerprint": worker["fingerprint"], "pid": process.pid,
              "start_ticks": _start_ticks(process.pid), "log": log_path,
              "started_at": time.time(), "command": command}
    _write_record(layout, record)
    return record


def _terminate(record: dict[str, Any]) -> None:
    """SIGTERM the worker's process group, then SIGKILL if it is still there; then make
    sure the processes it started in sessions of their own (its trial processes, which
    exit when their worker dies) are gone too."""
    descendants = _descendants(record["pid"]) if _alive(record) else []
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        if not _alive(record):
            break
        try:
            os.killpg(record["pid"], sig)
        except ProcessLookupError:
            break
        except PermissionError:
            os.kill(record["pid"], sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _alive(record):
            time.sleep(0.1)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and any(_alive(d) for d in descendants):
        time.sleep(0.1)
    for child in descendants:
        if _alive(child):
            try:
                os.kill(child["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


def _descendants(pid: int) -> list[dict[str, Any]]:
    """Every live descendant of ``pid`` as ``{"pid", "start_ticks"}``."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        out.append({"pid": child, "start_ticks": _start_ticks(child)})
        todo.extend(parents.get(child, []))
    return out


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in ("name", "slot", "gpu", "machine_type", "queue", "pid",
                                       "log", "started_at", "fingerprint")}


# -- records ---------------------------------------------------------------------------------


def _record_path(layout: Layout, name: str) -> str:
    return os.path.join(layout.run, name.replace("/", "_") + ".json")


def _record(layout: Layout, name: str) -> dict[str, Any] | None:
    try:
        with open(_record_path(layout, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _records(layout: Layout) -> list[dict[str, Any]]:
    out = []
    for path in sorted(Path(layout.run).glob("*.json")) if os.path.isdir(layout.run) else []:
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


def _write_record(layout: Layout, record: dict[str, Any]) -> None:
    path = _record_path(layout, record["name"])
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def _remove_record(layout: Layout, name: str) -> None:
    try:
        os.unlink(_record_path(layout, name))
    except FileNotFoundError:
        pass


# -- processes -------------------------------------------------------------------------------


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(record: dict[str, Any]) -> bool:
    pid = record.get("pid")
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, TypeError):
        return False
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return False
    ticks = record.get("start_ticks")
    return ticks is None or int(fields[19]) == ticks


def _read_env_file(path: str) -> dict[str, str]:
    env: dict[str, str] = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return env
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            env[key.strip()] = _unquote(value.strip())
    return env


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def _tail(path: str, size: int = 3000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


# -- workspace -------------------------------------------------------------------------------


def unpack(archive: Path, dest: Path, *, keep: bool = False) -> dict[str, Any]:
    """Extract a workspace archive next to ``dest``, then swap it in (a worker never
    sees a half-extracted workspace). Links and paths leaving ``dest`` are refused. The
    archive is deleted afterwards unless ``keep`` (Ansible compares it next time)."""
    fresh = dest.with_name(dest.name + ".new")
    old = dest.with_name(dest.name + ".old")
    for folder in (fresh, old):
        shutil.rmtree(folder, ignore_errors=True)
    fresh.mkdir(parents=True)
    with tarfile.open(archive, "r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(fresh, filter="data")
        else:  # Python < 3.10.12: refuse anything but plain files and folders
            members = [m for m in tar.getmembers() if (m.isfile() or m.isdir())
                       and not m.name.startswith(("/", "..")) and ".." not in m.name.split("/")]
            tar.extractall(fresh, members=members)  # noqa: S202 (members checked above)
    if dest.exists():
        dest.rename(old)
    fresh.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    if not keep:
        archive.unlink(missing_ok=True)
    return {"ok": True}


if __name__ == "__main__":
    raise SystemExit(main())
