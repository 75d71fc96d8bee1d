"""The benchmark's objective for our system: sleeps, returns a cheap loss and the
interval it ran, so utilisation and gaps are measured inside the trial process."""

from __future__ import annotations

import math
import os
import socket
import time
from typing import Any


def objective(params: dict[str, float]) -> dict[str, Any]:
    t_start = time.time()
    time.sleep(params["sleep"])
    return {
        "loss": (params["x"] - 1.0) ** 2 + math.log(params["y"]) ** 2,
        "status": "ok",
        "t_start": t_start,
        "t_end": time.time(),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }
