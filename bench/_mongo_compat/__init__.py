"""PyMongo 3 compatibility shim for Hyperopt's ``mongoexp`` (benchmark only).

Hyperopt 0.3.0's ``MongoTrials`` and ``hyperopt-mongo-worker`` still call
PyMongo 3 methods that PyMongo 4.0 removed.  :func:`install` puts them back as
thin wrappers over their PyMongo 4 replacements.  The driver process calls it
directly; worker subprocesses get it by having this folder on ``PYTHONPATH``,
which makes Python run :mod:`sitecustomize` here at start-up.
"""

from .pymongo_legacy import install

__all__ = ["install"]
