"""Install the PyMongo 3 shim in every Python process that has this folder on
``PYTHONPATH``: that is how ``hyperopt-mongo-worker`` subprocesses get it."""

import pymongo_legacy

pymongo_legacy.install()
