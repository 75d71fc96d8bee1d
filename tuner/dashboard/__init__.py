"""The results dashboard: a web page over MongoDB, live while experiments run.

``python -m tuner dashboard`` runs :func:`serve`; the page's JSON comes from
:class:`DashboardAPI` (:mod:`tuner.dashboard.api`), which reads MongoDB through
:mod:`tuner.dashboard.queries` and keeps per-experiment aggregates in a
:class:`~tuner.dashboard.trial_index.TrialIndex`.
"""

from tuner.dashboard.api import DashboardAPI
from tuner.dashboard.server import DEFAULT_HOST, DEFAULT_PORT, DashboardServer, serve

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "DashboardAPI", "DashboardServer", "serve"]
