# Stand-in for systemctl on a test host (containers have no systemd): just enough of
# it for Ansible's systemd_service module and the worker role. Units are read from
# /etc/systemd/system (the test host's own folder, mounted there); a started unit's
# ExecStart runs detached with the unit's User (root only), WorkingDirectory,
# Environment, EnvironmentFile and StandardOutput=append:; state is kept next to the
# units. Restart= is not emulated. The test bed prepends "#!<python>" to this file.
import json
import os
import shlex
import signal
import subprocess
import sys
import time

UNITS = "/etc/systemd/system"
STATE = os.path.join(UNITS, ".standin-state.json")


def load_state():
    try:
        with open(STATE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"enabled": [], "pids": {}}


def save_state(state):
    with open(STATE, "w") as f:
        json.dump(state, f)


def unit_file(unit):
    name = unit if "." in unit else unit + ".service"
    path = os.path.join(UNITS, name)
    if os.path.exists(path):
        return name, path, ""
    if "@" in name:
        base, _, rest = name.partition("@")
        instance = rest.rsplit(".", 1)[0]
        template = os.path.join(UNITS, f"{base}@.{rest.rsplit('.', 1)[1]}")
        if os.path.exists(template):
            return name, template, instance
    return name, None, ""


def parse(path, instance):
    service = {"Environment": [], "EnvironmentFile": []}
    section = None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line
                continue
            if section != "[Service]" or "=" not in line:
                continue
            key, value = line.split("=", 1)
            value = value.replace("%i", instance).replace("%I", instance)
            if key in ("Environment", "EnvironmentFile"):
                service[key].append(value)
            else:
                service[key] = value
    return service


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, TypeError):
        return False


def start(name, path, instance, state):
    if alive(state["pids"].get(name)):
        return 0
    service = parse(path, instance)
    if service.get("User", "root") not in ("root", "0"):
        sys.stderr.write("stand-in systemctl runs units as root only\n")
        return 1
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    for item in service["EnvironmentFile"]:
        optional, file = item.startswith("-"), item.lstrip("-")
        try:
            with open(file) as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#") and "=" in line:
                        key, value = line.split("=", 1)
                        env[key.strip()] = shlex.split(value)[0] if value.strip() else ""
        except OSError:
            if not optional:
                return 1
    for item in service["Environment"]:
        for word in shlex.split(item):
            key, _, value = word.partition("=")
            env[key] = value
    output = service.get("StandardOutput", "")
    log_path = output.split(":", 1)[1] if output.startswith(("append:", "file:")) else \
        os.path.join(UNITS, f".{name}.log")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            shlex.split(service["ExecStart"].lstrip("-@+!")), env=env,
            cwd=service.get("WorkingDirectory") or "/", stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    state["pids"][name] = process.pid
    return 0


def stop(name, state):
    pid = state["pids"].pop(name, None)
    if alive(pid):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)
    return 0


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    if not args:
        return 0
    command, units = args[0], [u for u in args[1:] if u != "-l"]
    state = load_state()
    rc = 0
    if command in ("daemon-reload", "daemon-reexec"):
        return 0
    for unit in units:
        name, path, instance = unit_file(unit)
        running = alive(state["pids"].get(name))
        enabled = name in state["enabled"]
        if command == "show":
            print(f"Id={name}\nNames={name}")
            print(f"LoadState={'loaded' if path else 'not-found'}")
            print(f"ActiveState={'active' if running else 'inactive'}")
            print(f"SubState={'running' if running else 'dead'}")
            print(f"UnitFileState={'enabled' if enabled else 'disabled'}")
            print(f"MainPID={state['pids'].get(name, 0) if running else 0}")
            print(f"FragmentPath={path or ''}")
        elif command == "is-active":
            print("active" if running else "inactive")
            rc = rc or (0 if running else 3)
        elif command == "is-enabled":
            print("enabled" if enabled else "disabled")
            rc = rc or (0 if enabled else 1)
        elif command == "list-unit-files":
            if path:
                print(f"{name} {'enabled' if enabled else 'disabled'}")
            else:
                rc = 1
        elif path is None:
            sys.stderr.write(f"Unit {name} not found.\n")
            rc = 5
        elif command == "enable":
            state["enabled"] = sorted(set(state["enabled"]) | {name})
        elif command == "disable":
            state["enabled"] = [u for u in state["enabled"] if u != name]
        elif command == "start":
            rc = rc or start(name, path, instance, state)
        elif command == "stop":
            rc = rc or stop(name, state)
        elif command in ("restart", "reload-or-restart", "try-restart"):
            if command != "try-restart" or running:
                stop(name, state)
                rc = rc or start(name, path, instance, state)
        else:
            sys.stderr.write(f"stand-in systemctl: unsupported command {command}\n")
            rc = 1
    save_state(state)
    return rc


sys.exit(main(sys.argv[1:]))
