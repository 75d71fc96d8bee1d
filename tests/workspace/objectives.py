"""Objectives the test workers run (the tests' "workspace")."""

from __future__ import annotations

import os
import time


def quadratic(params):
    time.sleep(params.get("sleep", 0.0))
    return (params["x"] - 1.0) ** 2


def record_params(params):
    """Echo what arrived, exactly: repr keeps tuples, None and nesting visible."""
    return {"loss": 0.0, "status": "ok", "got": repr(params)}


def raise_on_negative(params):
    if params["x"] < 0:
        raise ValueError(f"x is negative: {params['x']}")
    return params["x"]


def logged(params):
    """Append one line per run to params['log'], so tests can count runs per point."""
    with open(params["log"], "a") as f:
        f.write(f"{params['x']!r} {os.getpid()}\n")
    time.sleep(params.get("sleep", 0.0))
    return abs(params["x"])


def returns(params):
    """Return whatever params['value'] names, to exercise result validation."""
    import math

    values = {
        "nan": float("nan"), "inf": float("inf"), "none": None, "string": "0.5",
        "no_loss": {"status": "ok"}, "bad_status": {"loss": 1.0, "status": "great"},
        "not_json": {"loss": 1.0, "status": "ok", "obj": object()},
        "big": {"loss": 1.0, "status": "ok", "blob": "x" * 2_000_000},
        "good": {"loss": math.pi, "status": "ok", "extra": [1, 2]},
    }
    return values[params["value"]]


def suicide(params):
    """Kill the trial process, as a segfaulting CUDA kernel or the OOM killer would."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def spawn_and_sleep(params):
    """Start a child that would outlive a careless kill, then hang."""
    import subprocess

    child = subprocess.Popen(["sleep", "1000"])
    with open(params["pids"], "w") as f:
        f.write(f"{os.getpid()} {child.pid}\n")
    time.sleep(1000)


def chatty(params):
    print("from python print")
    os.write(1, b"from fd 1\n")
    os.write(2, b"from fd 2\n")
    return 1.0


def dies_once(params):
    """Kill the trial process on the first run of this point, succeed on the next."""
    import signal

    marker = f"{params['marker']}.{params['x']!r}"
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return abs(params["x"])


def poison_or_fine(params):
    """A poison point kills its trial process every time; the others are fine."""
    import signal

    if params["poison"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return params["x"] ** 2


def dashboard_model(params):
    """A model-like objective for the results tests: logs a line, sleeps ``params['sleep']``,
    fails when ``x > 3`` (about one trial in five), else a loss that ``x`` drives most."""
    import math

    print(f"training {params['opt']['name']} with lr={params['lr']:.4g}", flush=True)
    time.sleep(params.get("sleep", 0.0))
    if params["x"] > 3:
        raise ValueError(f"diverged at x={params['x']:.3f}")
    return (params["x"] - 1.0) ** 2 + 0.1 * abs(math.log(params["lr"]) + 5)


def hang(params):
    """Never return; with ``spawn``, first start a child process that never ends either."""
    if params.get("spawn"):
        import subprocess

        child = subprocess.Popen(["sleep", "100000"])
        with open(params["pids"], "a") as f:
            f.write(f"{os.getpid()} {child.pid}\n")
    else:
        with open(params["pids"], "a") as f:
            f.write(f"{os.getpid()}\n")
    time.sleep(100000)


def checkpointing(params):
    """Save a checkpoint when told that the soft time limit is reached."""
    from sdk import SoftTimeLimitExceeded

    try:
        time.sleep(100000)
    except SoftTimeLimitExceeded:
        with open(params["checkpoint"], "w") as f:
            f.write("saved")
        raise


def conditional(params):
    """A conditional space: branch "a" bottoms out at 1.0, branch "b" at 0.0."""
    time.sleep(params.get("sleep", 0.0))
    branch = params["branch"]
    if branch["kind"] == "a":
        return 1.0 + (branch["x"] - 0.5) ** 2
    return (branch["y"] - 2.0) ** 2 / 10 + 0.01 * abs(branch["n"] - 3)


def cluster_trial(params):
    """Print where the trial runs (for the per-trial logs), sleep, return a quadratic."""
    import socket

    print(f"cluster trial x={params['x']!r} on {socket.gethostname()} "
          f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}", flush=True)
    time.sleep(params.get("sleep", 0.0))
    print("cluster trial done", flush=True)
    return (params["x"] - 1.0) ** 2


def report_process(params):
    """Where the trial runs: its pid, its parent's and its session's."""
    return {"loss": 0.0, "status": "ok", "pid": os.getpid(), "ppid": os.getppid(),
            "sid": os.getsid(0)}
