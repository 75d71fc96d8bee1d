"""Local workers: started beside the tuner, and never left behind by it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import REPO, process_alive, wait_for


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_stop_when_the_tuner_dies_without_stopping_them(tmp_path, sig):
    tuner = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from broker.settings import Settings
        from tuner.local import LocalWorkers
        workers = LocalWorkers(Settings(state_dir=Path({str(tmp_path)!r}),
                                        workspace=Path({str(tmp_path)!r})),
                               count=2, command="sleep 300")
        workers.start()
        print(*[p.pid for p in workers.processes], flush=True)
        time.sleep(300)
    """)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert tuner.stdout is not None
    pids = [int(pid) for pid in tuner.stdout.readline().split()]
    assert len(pids) == 2 and all(process_alive(pid) for pid in pids)
    tuner.send_signal(sig)
    tuner.wait(timeout=30)
    wait_for(lambda: not any(process_alive(pid) for pid in pids), timeout=30,
             message="the workers of a dead tuner to stop")


def test_stopping_normally_leaves_no_watcher(tmp_path):
    from pathlib import Path

    from broker.settings import Settings
    from tuner.local import LocalWorkers

    with LocalWorkers(Settings(state_dir=Path(tmp_path), workspace=Path(tmp_path)), count=1,
                      command="sleep 300") as workers:
        pid = workers.processes[0].pid
        watcher = workers._watcher
        assert watcher is not None and process_alive(watcher[0])
    assert not process_alive(pid) and not process_alive(watcher[0])
