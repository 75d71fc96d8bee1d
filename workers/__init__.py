"""Worker side: the Celery task that evaluates one trial, the process that runs the
objective, and the command that starts a worker (``python -m workers``)."""
