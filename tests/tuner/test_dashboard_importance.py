"""The parameter-importance measure on data whose answer is known."""

from __future__ import annotations

import numpy as np

from tuner.dashboard.importance import importance


def test_a_parameter_that_drives_the_loss_scores_high_and_noise_scores_near_zero():
    rng = np.random.default_rng(0)
    x = rng.uniform(-5, 5, 400)             # a sweet spot in the middle: not monotone
    noise = rng.uniform(0, 1, 400)
    lr = np.exp(rng.uniform(-9, -1, 400))   # log-scaled, a small monotone effect
    loss = (x - 1) ** 2 + 0.3 * np.log(lr) + rng.normal(0, 0.1, 400)
    scores = {s.label: s for s in importance(loss, {"x": x, "noise": noise, "lr": lr})}
    assert [s.label for s in importance(loss, {"x": x, "noise": noise, "lr": lr})] == [
        "x", "lr", "noise"]
    assert scores["x"].score > 0.7
    assert scores["noise"].score < 0.03
    assert abs(scores["x"].rho) < 0.5        # a rank correlation would miss x
    assert scores["lr"].rho > 0               # larger lr, larger loss
    assert scores["x"].groups == 10 and scores["x"].n == 400


def test_choices_are_grouped_by_option_and_absent_values_are_left_out():
    rng = np.random.default_rng(1)
    opt = rng.integers(0, 3, 300).astype(float)
    drawn = rng.uniform(0.5, 1, 300)
    momentum = [float(v) if o == 0 else None for o, v in zip(opt, drawn, strict=True)]
    loss = np.where(opt == 2, 10.0, 1.0) + rng.normal(0, 0.1, 300)
    scores = {s.label: s for s in importance(loss, {"opt": opt, "momentum": momentum})}
    assert scores["opt"].groups == 3 and scores["opt"].score > 0.6
    assert scores["momentum"].n == sum(m is not None for m in momentum)
    assert scores["momentum"].score < 0.05


def test_too_few_trials_or_constant_values_give_no_or_zero_score():
    assert importance([1.0, 2.0, 3.0], {"x": [1.0, 2.0, 3.0]}) == []
    [constant] = importance(list(range(20)), {"c": [0.5] * 20})
    assert constant.score == 0 and constant.rho is None
    [tied] = importance([1.0] * 20, {"x": list(range(20))})
    assert tied.score == 0
