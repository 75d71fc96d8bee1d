"""SSH connections with verified host keys, and running commands on a host.

Fabric accepts unknown host keys silently (paramiko's ``AutoAddPolicy``). Here a host
must already be in ``known_hosts`` (``RejectPolicy`` semantics), unless the caller asks
to trust new hosts explicitly (``--trust-new-hosts``): then an unknown key is accepted,
appended to ``known_hosts`` and logged with its fingerprint. A key that differs from the
recorded one is always refused.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import logging
import os
import shlex
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fabric import Connection
from invoke.exceptions import CommandTimedOut, UnexpectedExit
from paramiko import MissingHostKeyPolicy, PKey, SSHClient
from paramiko.hostkeys import HostKeyEntry
from paramiko.ssh_exception import (
    AuthenticationException,
    BadHostKeyException,
    NoValidConnectionsError,
    SSHException,
)

from workers.provisioning.errors import HostKeyError, ProvisionError
from workers.provisioning.hosts import Host

log = logging.getLogger(__name__)

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
CONNECT_TIMEOUT_S = 15
"""How long to wait for a host's SSH server to answer (seconds)."""

COMMAND_TIMEOUT_S = 300
"""Default limit for one remote command (seconds); installs get longer."""

_known_hosts_lock = threading.Lock()


def fingerprint(key: PKey) -> str:
    """The key's SHA-256 fingerprint as OpenSSH prints it (``SHA256:...``)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class UnknownHostKey(SSHException):
    """The host is not in ``known_hosts`` and trusting new hosts was not asked for."""

    def __init__(self, hostname: str, key: PKey) -> None:
        super().__init__(f"host key for {hostname} is not in known_hosts "
                         f"({key.get_name()} {fingerprint(key)})")
        self.hostname = hostname
        self.key = key


class RefuseUnknownHosts(MissingHostKeyPolicy):
    """The default: an unknown host is refused, with its key's fingerprint in the error
    so the user can check it against the host before trusting it."""

    def missing_host_key(self, client: SSHClient, hostname: str, key: PKey) -> None:
        raise UnknownHostKey(hostname, key)


class TrustNewHosts(MissingHostKeyPolicy):
    """Only with ``--trust-new-hosts``: accept an unknown host's key and append it to
    ``known_hosts`` (under a lock: hosts are provisioned in parallel)."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: SSHClient, hostname: str, key: PKey) -> None:
        line = HostKeyEntry([hostname], key).to_line()
        with _known_hosts_lock:
            self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                f.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning("trusted new host %s: %s %s (recorded in %s)", hostname, key.get_name(),
                    fingerprint(key), self.known_hosts)


@contextmanager
def connect(host: Host, *, known_hosts: Path = DEFAULT_KNOWN_HOSTS,
            trust_new_hosts: bool = False,
            timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator[Remote]:
    """An open SSH connection to ``host`` (closed on exit); :class:`HostKeyError` or
    :class:`ProvisionError` (step ``connect``) saying why not."""
    known_hosts = known_hosts.expanduser()
    connect_kwargs: dict[str, Any] = {"banner_timeout": timeout_s, "auth_timeout": timeout_s}
    if host.key_filename:
        connect_kwargs.update(key_filename=os.path.expanduser(host.key_filename),
                              look_for_keys=False)
    conn = Connection(host.address, user=host.user, port=host.port,
                      connect_timeout=int(timeout_s), connect_kwargs=connect_kwargs)
    conn.client.set_missing_host_key_policy(
        TrustNewHosts(known_hosts) if trust_new_hosts else RefuseUnknownHosts())
    if known_hosts.exists():
        try:
            conn.client.load_host_keys(str(known_hosts))
        except (OSError, SSHException) as exc:
            raise ProvisionError(host.name, "connect",
                                 f"cannot read {known_hosts}: {exc}") from None
    try:
        conn.open()
    except UnknownHostKey as exc:
        raise HostKeyError(
            host.name, "connect",
            f"{exc}; check the fingerprint on the host (ssh-keygen -lf "
            f"/etc/ssh/ssh_host_{_key_file(exc.key)}_key.pub), then add it to {known_hosts} "
            "(ssh-keyscan) or pass --trust-new-hosts to record it on first contact") from None
    except BadHostKeyException as exc:
        raise HostKeyError(
            host.name, "connect",
            f"host key for {host.address} does not match {known_hosts} (it offers "
            f"{fingerprint(exc.key)}, expected {fingerprint(exc.expected_key)}): refusing; if "
            f"the host was reinstalled, remove the old key with ssh-keygen -R {host.address}"
        ) from None
    except AuthenticationException as exc:
        raise ProvisionError(host.name, "connect",
                             f"authentication failed for {host.target}: {exc}") from None
    except NoValidConnectionsError as exc:
        reasons = "; ".join(sorted({e.strerror or str(e) for e in exc.errors.values()}))
        raise ProvisionError(host.name, "connect",
                             f"cannot connect to {host.target}: {reasons}") from None
    except (SSHException, OSError, EOFError) as exc:
        what = "timed out" if isinstance(exc, socket.timeout) else str(exc) or type(exc).__name__
        raise ProvisionError(host.name, "connect",
                             f"cannot connect to {host.target}: {what}") from None
    try:
        yield Remote(host, conn)
    finally:
        conn.close()


def _key_file(key: PKey) -> str:
    name = key.get_name()
    return "ed25519" if "ed25519" in name else "ecdsa" if "ecdsa" in name else "rsa"


class Remote:
    """Commands and files on one connected host; failures become :class:`ProvisionError`
    naming the host, the step and the tail of the command's output."""

    def __init__(self, host: Host, conn: Connection) -> None:
        self.host = host
        self.conn = conn

    def run(self, command: str, *, step: str, timeout: float | None = COMMAND_TIMEOUT_S,
            warn: bool = False) -> Any:
        """Run ``command`` (a shell command line) and return Invoke's result; with
        ``warn`` a non-zero exit is returned instead of raised."""
        try:
            return self.conn.run(command, hide=True, warn=warn, timeout=timeout,
                                 in_stream=False, pty=False)
        except UnexpectedExit as exc:
            result = exc.result
            output = (result.stderr or "") + (result.stdout or "")
            raise ProvisionError(self.host.name, step,
                                 f"`{_short(command)}` exited with status {result.exited}: "
                                 f"{_last_line(output)}", output=output[-4000:]) from None
        except CommandTimedOut:
            raise ProvisionError(self.host.name, step, f"`{_short(command)}` did not finish "
                                 f"within {timeout:.0f} s") from None
        except (SSHException, OSError, EOFError) as exc:
            raise ProvisionError(self.host.name, step,
                                 f"connection lost: {exc or type(exc).__name__}") from None

    def stream(self, command: str, out: Any, *, step: str) -> int:
        """Run ``command`` with its output written to ``out`` as it comes; its status."""
        try:
            result = self.conn.run(command, hide=True, warn=True, in_stream=False, pty=False,
                                   out_stream=out, err_stream=out)
        except (SSHException, OSError, EOFError) as exc:
            raise ProvisionError(self.host.name, step, f"connection lost: {exc}") from None
        return int(result.exited)

    def put_bytes(self, data: bytes, path: str, *, step: str, mode: int = 0o644) -> None:
        """Write ``data`` to ``path`` over SFTP (created with ``mode`` before writing)."""
        try:
            sftp = self.conn.sftp()
            tmp = f"{path}.part"
            with sftp.open(tmp, "wb") as f:
                f.set_pipelined(True)
                sftp.chmod(tmp, mode)
                f.write(data)
            sftp.posix_rename(tmp, path)
        except (OSError, SSHException, EOFError) as exc:
            raise ProvisionError(self.host.name, step,
                                 f"cannot upload {path}: {exc or type(exc).__name__}") from None

    def read_bytes(self, path: str, *, step: str) -> bytes | None:
        """The file's content over SFTP; ``None`` if it does not exist."""
        try:
            sftp = self.conn.sftp()
            buffer = io.BytesIO()
            sftp.getfo(path, buffer)
            return buffer.getvalue()
        except FileNotFoundError:
            return None
        except (OSError, SSHException, EOFError) as exc:
            raise ProvisionError(self.host.name, step,
                                 f"cannot read {path}: {exc or type(exc).__name__}") from None


def quote(*words: str) -> str:
    """A shell command line from ``words``."""
    return " ".join(shlex.quote(w) for w in words)


def _short(command: str, limit: int = 80) -> str:
    return command if len(command) <= limit else command[:limit - 3] + "..."


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"
