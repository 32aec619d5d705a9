import numpy as np
import pytest

from robopolicy.eval.stats import bootstrap_mean_ci, summarize, wilson_interval


@pytest.mark.parametrize("k,n,low,high", [(5, 10, 0.2366, 0.7634), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0),
                                          (45, 50, 0.7864, 0.9565)])
def test_wilson_matches_reference_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-3) and hi == pytest.approx(high, abs=1e-3)


def test_wilson_with_no_episodes_is_uninformative():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_bootstrap_is_reproducible_and_brackets_the_mean():
    values = np.random.default_rng(0).normal(3.0, 1.0, 200)
    low, high = bootstrap_mean_ci(values)
    assert low < values.mean() < high and high - low < 0.5
    assert bootstrap_mean_ci(values) == (low, high)
    assert summarize(values)["ci95"] == [low, high]
