"""What the tuner and the workers share: settings, the Celery app, the trial store,
the experiment spec, and the local default services.

Nothing in here imports ``tuner`` or ``workers``: both sides import this package,
never each other.
"""
