"""Tuner side: the suggestion loop, experiments, the distributed ``Trials`` and the CLI.

Follow one trial: :mod:`tuner.trials` (``DistributedTrials.fmin``) starts
:mod:`tuner.loop`, which asks the algorithm for points, writes them through
:mod:`broker.store` and sends them with :mod:`tuner.dispatch`; results come back as
notifications (:mod:`broker.notify`) and are read from MongoDB.
"""
