"""A tuning script, replayed by workers (``script`` objective references)."""

import collections
import fractions
import os
import sys
import time

from hyperopt import hp, rand

from sdk import hyper_tune

SCRIPT_GLOBAL = {"offset": 1.5}  # the objective reads this: workers must rebuild it


def objective(params):
    time.sleep(float(os.environ.get("TEST_SLEEP", "0")))
    kind = params["kind"]
    assert kind in (collections.OrderedDict, fractions.Fraction), kind
    return {"loss": (params["x"] - SCRIPT_GLOBAL["offset"]) ** 2, "status": "ok",
            "kind": kind.__name__}


space = {"x": hp.uniform("x", -5, 5),
         "kind": hp.choice("kind", [collections.OrderedDict, fractions.Fraction])}

if __name__ == "__main__":
    max_evals = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    result = hyper_tune(objective, space, algo=rand.suggest, max_evals=max_evals)
    print("RESULT", result["best_loss"], result["trials"])
