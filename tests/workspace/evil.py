"""What an attacker would like a worker to import: leaves a marker if it ever runs."""

import os
import tempfile
from pathlib import Path

MARKER = Path(tempfile.gettempdir()) / f"tuner-evil-marker-{os.getuid()}"
MARKER.write_text("executed")


def run(params):
    return 0.0
