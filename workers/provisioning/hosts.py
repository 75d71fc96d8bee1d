"""Which hosts to provision, from ``--hosts gpu1,gpu2`` or an Ansible inventory.

The same inventory serves ``python -m tuner cluster provision --inventory`` and
``ansible-playbook -i`` (``ansible/``): the hosts of group ``workers`` (every host when
there is no such group), with the connection variables Ansible uses
(``ansible_host``, ``ansible_port``, ``ansible_user``, ``ansible_ssh_private_key_file``)
and the ``tuner_*`` variables of the worker role (``tuner_home``, ``tuner_python``,
``tuner_machine_type``, ``tuner_cpu_workers``, ``tuner_venv_system_site_packages``).
Both Ansible inventory formats are read (YAML and INI), with ``group_vars/`` and
``host_vars/`` next to the inventory file.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from workers.provisioning.errors import InventoryError

DEFAULT_REMOTE_DIR = "~/.gpu-tuner"
"""Where a host keeps the venv, workspace, worker logs and state (``tuner_home``)."""

DEFAULT_PYTHON = "python3"
"""The host's interpreter the virtual environment is created from (``tuner_python``)."""

WORKER_GROUP = "workers"
"""The inventory group whose hosts run workers (as in ``ansible/site.yml``)."""


@dataclass(frozen=True)
class Host:
    """One SSH host and how to set it up. ``name`` is how the user refers to it (and
    how its workers are named: ``gpu0@name``); ``address`` is where to connect."""

    name: str
    address: str
    port: int = 22
    user: str | None = None
    key_filename: str | None = None
    python: str = DEFAULT_PYTHON
    remote_dir: str = DEFAULT_REMOTE_DIR
    system_site_packages: bool = False
    machine_type: str | None = None
    cpu_workers: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def target(self) -> str:
        """``user@address:port`` for messages."""
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.address}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "port": self.port,
                "user": self.user, "key_filename": self.key_filename, "python": self.python,
                "remote_dir": self.remote_dir,
                "system_site_packages": self.system_site_packages,
                "machine_type": self.machine_type, "cpu_workers": self.cpu_workers}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Host:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "extra"}
        return cls(**known)


def parse_hosts(text: str, *, user: str | None = None, key_filename: str | None = None,
                port: int | None = None) -> list[Host]:
    """Hosts from ``gpu1,ml@gpu2:2222,[fe80::1]:22``; ``user``/``port``/``key_filename``
    apply where a host does not say otherwise."""
    hosts = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host_user, _, rest = item.rpartition("@")
        match = re.fullmatch(r"\[(?P<v6>[^\]]+)\](?::(?P<p6>\d+))?|(?P<h>[^:]+)(?::(?P<p>\d+))?",
                             rest)
        if not match:
            raise InventoryError(f"cannot read host {item!r} (expected [user@]host[:port])",
                                 source="--hosts")
        address = match.group("v6") or match.group("h")
        host_port = match.group("p6") or match.group("p")
        hosts.append(Host(name=address, address=address,
                          port=int(host_port) if host_port else (port or 22),
                          user=host_user or user, key_filename=key_filename))
    if not hosts:
        raise InventoryError("no hosts given", source="--hosts")
    _check_unique(hosts, "--hosts")
    return hosts


def load_inventory(path: Path, *, group: str = WORKER_GROUP, user: str | None = None,
                   key_filename: str | None = None) -> list[Host]:
    """The hosts of ``group`` (or of the whole inventory when it has no such group) in
    an Ansible inventory file, YAML or INI. ``user``/``key_filename`` apply where the
    inventory does not set ``ansible_user``/``ansible_ssh_private_key_file``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InventoryError(f"cannot read the inventory: {exc.strerror}",
                             source=str(path)) from None
    inventory = _Inventory()
    if path.suffix in (".yml", ".yaml") or text.lstrip().startswith(("all:", "---")):
        inventory.read_yaml(text, str(path))
    else:
        inventory.read_ini(text, str(path))
    inventory.read_var_dirs(path.parent)
    names = inventory.hosts_of(group) if group in inventory.groups else inventory.all_hosts()
    if not names:
        raise InventoryError(f"no hosts in group {group!r}", source=str(path))
    hosts = [_host_from_vars(name, inventory.vars_of(name), str(path), user, key_filename)
             for name in names]
    _check_unique(hosts, str(path))
    return hosts


def with_defaults(hosts: Iterable[Host], **defaults: Any) -> list[Host]:
    """``hosts`` with the given fields set where they still hold the built-in default
    (command-line options such as ``--python`` or ``--remote-dir``)."""
    base = Host(name="", address="")
    out = []
    for host in hosts:
        changes = {k: v for k, v in defaults.items()
                   if v is not None and getattr(host, k) == getattr(base, k)}
        out.append(replace(host, **changes))
    return out


# -- inventory formats -----------------------------------------------------------------------


@dataclass
class _Inventory:
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)
    host_file_vars: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _group(self, name: str) -> dict[str, Any]:
        return self.groups.setdefault(name, {"hosts": [], "children": [], "vars": {},
                                             "parents": []})

    def _add_host(self, group: str, host: str, variables: Mapping[str, Any]) -> None:
        entry = self._group(group)
        if host not in entry["hosts"]:
            entry["hosts"].append(host)
        self.host_vars.setdefault(host, {}).update(variables)

    def _add_child(self, parent: str, child: str) -> None:
        self._group(parent)["children"].append(child)
        self._group(child)["parents"].append(parent)

    # YAML: {all: {hosts: {h: {vars}}, vars: {}, children: {g: {...}}}}
    def read_yaml(self, text: str, source: str) -> None:
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise InventoryError(f"invalid YAML: {exc}", source=source) from None
        if not isinstance(data, dict):
            raise InventoryError("expected a mapping of groups", source=source)
        for name, body in data.items():
            self._read_yaml_group(name, body or {}, source)

    def _read_yaml_group(self, name: str, body: Any, source: str) -> None:
        if not isinstance(body, dict):
            raise InventoryError(f"group {name!r} must be a mapping", source=source)
        group = self._group(name)
        group["vars"].update(body.get("vars") or {})
        for pattern, variables in (body.get("hosts") or {}).items():
            for host in _expand(str(pattern)):
                self._add_host(name, host, variables or {})
        for child, child_body in (body.get("children") or {}).items():
            self._add_child(name, child)
            self._read_yaml_group(child, child_body or {}, source)

    # INI: [group] host k=v ... / [group:vars] k=v / [group:children] child
    def read_ini(self, text: str, source: str) -> None:
        section, kind = "ungrouped", "hosts"
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            header = re.fullmatch(r"\[([^\]:]+)(?::(vars|children))?\]", line)
            if header:
                section, kind = header.group(1), header.group(2) or "hosts"
                self._group(section)
                continue
            try:
                words = shlex.split(line, comments=True)
            except ValueError as exc:
                raise InventoryError(f"line {number}: {exc}", source=source) from None
            if not words:
                continue
            if kind == "vars":
                key, sep, value = line.partition("=")
                if not sep:
                    raise InventoryError(f"line {number}: expected key=value", source=source)
                self._group(section)["vars"][key.strip()] = _ini_value(value.strip())
            elif kind == "children":
                self._add_child(section, words[0])
            else:
                variables = {}
                for word in words[1:]:
                    key, sep, value = word.partition("=")
                    if not sep:
                        raise InventoryError(f"line {number}: expected key=value, got {word!r}",
                                             source=source)
                    variables[key] = _ini_value(value)
                for host in _expand(words[0]):
                    self._add_host(section, host, variables)

    def read_var_dirs(self, folder: Path) -> None:
        """``group_vars/<group>.yml`` (or a folder of them) and ``host_vars/<host>.yml``."""
        for name in list(self.groups) + ["all"]:
            self._group(name)["file_vars"] = _load_var_files(folder / "group_vars", name)
        for name in list(self.host_vars):
            self.host_file_vars[name] = _load_var_files(folder / "host_vars", name)

    def hosts_of(self, group: str, seen: frozenset[str] = frozenset()) -> list[str]:
        if group in seen or group not in self.groups:
            return []
        out = list(self.groups[group]["hosts"])
        for child in self.groups[group]["children"]:
            out += [h for h in self.hosts_of(child, seen | {group}) if h not in out]
        return out

    def all_hosts(self) -> list[str]:
        return list(self.host_vars)

    def vars_of(self, host: str) -> dict[str, Any]:
        """Ansible's precedence: inventory group variables (``all``, then parents before
        children) < ``group_vars/`` files (same order) < inventory host variables <
        ``host_vars/`` files."""
        chain: list[str] = []

        def visit(group: str) -> None:
            for parent in self.groups.get(group, {}).get("parents", []):
                visit(parent)
            if group not in chain:
                chain.append(group)

        for group, body in self.groups.items():
            if host in body["hosts"]:
                visit(group)
        order = ["all"] + [g for g in chain if g != "all"]
        merged: dict[str, Any] = {}
        for layer in ("vars", "file_vars"):
            for group in order:
                merged.update(self.groups.get(group, {}).get(layer) or {})
        merged.update(self.host_vars.get(host, {}))
        merged.update(self.host_file_vars.get(host, {}))
        return merged


def _load_var_files(folder: Path, name: str) -> dict[str, Any]:
    import yaml

    files = [folder / f"{name}{ext}" for ext in (".yml", ".yaml", "")]
    files = [f for f in files if f.is_file()]
    if (folder / name).is_dir():
        files += sorted(p for p in (folder / name).iterdir() if p.suffix in (".yml", ".yaml"))
    merged: dict[str, Any] = {}
    for file in files:
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InventoryError(f"invalid YAML: {exc}", source=str(file)) from None
        if isinstance(data, dict):
            merged.update(data)
    return merged


def _expand(pattern: str) -> list[str]:
    """Ansible's host ranges: ``gpu[01:03]`` -> gpu01, gpu02, gpu03."""
    match = re.search(r"\[(\d+):(\d+)\]", pattern)
    if not match:
        return [pattern]
    start, end = match.group(1), match.group(2)
    width = len(start) if start.startswith("0") else 0
    out = []
    for i in range(int(start), int(end) + 1):
        out += _expand(pattern[:match.start()] + str(i).zfill(width) + pattern[match.end():])
    return out


def _ini_value(text: str) -> Any:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("true", "yes"):
        return True
    if lowered in ("false", "no"):
        return False
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def _host_from_vars(name: str, variables: Mapping[str, Any], source: str,
                    user: str | None, key_filename: str | None) -> Host:
    def get(key: str, default: Any = None) -> Any:
        value = variables.get(key, default)
        if isinstance(value, str) and "{{" in value:
            raise InventoryError(f"host {name}: {key} is a Jinja template ({value!r}); "
                                 "give a plain value for the provisioning", source=source)
        return value

    def flag(value: Any) -> bool:
        return value if isinstance(value, bool) else str(value).lower() in (
            "1", "true", "yes", "on")

    try:
        cpu_workers = get("tuner_cpu_workers")
        return Host(
            name=name,
            address=str(get("ansible_host", name)),
            port=int(get("ansible_port", get("ansible_ssh_port", 22))),
            user=get("ansible_user", get("ansible_ssh_user", user)),
            key_filename=get("ansible_ssh_private_key_file", key_filename),
            python=str(get("tuner_python", DEFAULT_PYTHON)),
            remote_dir=str(get("tuner_home", DEFAULT_REMOTE_DIR)),
            system_site_packages=flag(get("tuner_venv_system_site_packages", False)),
            machine_type=get("tuner_machine_type"),
            cpu_workers=None if cpu_workers is None else int(cpu_workers),
            extra=dict(variables),
        )
    except (TypeError, ValueError) as exc:
        raise InventoryError(f"host {name}: {exc}", source=source) from None


def _check_unique(hosts: list[Host], source: str) -> None:
    seen: set[str] = set()
    for host in hosts:
        if host.name in seen:
            raise InventoryError(f"host {host.name} is listed twice", source=source)
        seen.add(host.name)
