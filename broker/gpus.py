"""Which GPUs this machine has, as ``nvidia-smi`` reports them."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

QUERY = ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader"]


@dataclass(frozen=True)
class Gpu:
    index: str
    name: str
    memory: str


def parse(output: str) -> list[Gpu]:
    """Parse ``nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader``."""
    gpus = []
    for line in output.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[0].isdigit():
            gpus.append(Gpu(parts[0], ", ".join(parts[1:-1]), parts[-1]))
    return gpus


def detect() -> list[Gpu]:
    """The local GPUs; empty when ``nvidia-smi`` is missing or fails."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(QUERY, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return parse(done.stdout)
