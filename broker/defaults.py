"""Named defaults, with their units and the reason for each value.

Every tunable number of the system starts here; :class:`broker.settings.Settings`
reads overrides from the environment and the command line.
"""

from __future__ import annotations

DEFAULT_MACHINE_TYPE = "default"
"""Workers consume the queue of their machine type; the tuner sends to the one it targets."""

HEARTBEAT_S = 2.0
"""A worker renews the lease of the trial it runs this often (seconds); the tuner looks
for expired leases and counts live workers this often too, even when no notification
arrives."""

LEASE_S = 15.0
"""A running trial whose lease has not been renewed for this long (seconds) is presumed
abandoned (its worker died or lost the network) and is queued again. Several missed
heartbeats, so that a stalled disk or a GC pause does not look like a dead worker."""

MAX_ATTEMPTS = 3
"""How many times a trial may lose its worker before it is recorded as failed
("worker lost ×N"). Celery alone would redeliver a poison message forever."""

VISIBILITY_TIMEOUT_S = 12 * 3600.0
"""Redis redelivers a message that stayed unacknowledged this long (seconds).

With late acknowledgement a trial's message stays unacknowledged while it runs, so
this must exceed the longest trial; otherwise Redis hands a second copy to another
worker. That copy finds the trial leased and does nothing, but it would occupy a
worker slot for a moment. Lost workers are detected through leases, not through this."""

WORKERS_PER_QUEUED_AHEAD = 8
"""Unless ``TUNER_QUEUE_AHEAD`` says otherwise, one suggestion waits in the queue beyond
one per worker for every 8 workers (at least one), so that a worker that finishes starts
its next trial at once instead of waiting for the tuner to suggest. With many workers
finishing short trials, one waiting suggestion is taken before the tuner has reacted to
the next finish (64 slots with 1 s trials: utilisation 93.9 % with 1, 95.4 % with 8).
Each costs the algorithm one result it has not seen yet; 0 restores strict "one
suggestion per free worker"."""

CONNECT_TIMEOUT_S = 4.0
"""How long to wait for MongoDB, then Redis, before reporting them unreachable (seconds):
both together stay under the 10 s users are promised."""

RESULT_RETRY_S = 120.0
"""A worker keeps retrying a failed result write for this long (seconds), with bounded
exponential backoff (see below), before it gives up; the trial's lease then
expires and the trial is re-run, not lost."""

RESULT_RETRY_MAX_DELAY_S = 2.0
"""The longest pause between two attempts of a worker's result write (seconds)."""

MONGO_OUTAGE_S = 300.0
"""The tuner waits this long (seconds) for MongoDB to come back before it stops with
an error; the experiment can then be resumed by running it again."""

LOG_TAIL_BYTES = 8 * 1024
"""How much of a trial's captured stdout/stderr is kept in its trial document."""

MAX_RESULT_BYTES = 1024 * 1024
"""A result document larger than this (JSON-encoded) is recorded as a failed trial."""

STATE_DIR = ".tuner"
"""Project-local folder for the local default services' data, logs and secrets."""

MONGO_DB = "tuner"
"""MongoDB database holding the experiments, trials and workers collections."""
