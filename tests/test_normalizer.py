import numpy as np
import pytest
import torch

from robopolicy.nn.normalizer import Normalizer


@pytest.mark.parametrize("mode", ["min_max", "mean_std"])
def test_round_trip_and_range(mode: str, rng: np.random.Generator) -> None:
    data = rng.normal(3.0, [0.5, 2.0, 10.0], size=(500, 3)).astype(np.float32)
    stats = {"x": {"min": data.min(0), "max": data.max(0), "mean": data.mean(0), "std": data.std(0)}}
    norm = Normalizer({"x": 3})
    norm.fit(stats, mode)
    x = torch.from_numpy(data)
    y = norm.normalize("x", x)
    torch.testing.assert_close(norm.unnormalize("x", y), x, rtol=1e-5, atol=1e-4)
    if mode == "min_max":
        assert y.min() >= -1 - 1e-5 and y.max() <= 1 + 1e-5
        torch.testing.assert_close(y.min(0).values, -torch.ones(3), atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
        torch.testing.assert_close(y.std(0, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)


@pytest.mark.parametrize("mode", ["min_max", "mean_std"])
def test_constant_dimension_is_finite(mode: str) -> None:
    data = np.stack([np.full(10, 5.0), np.linspace(0, 1, 10)], 1).astype(np.float32)
    stats = {"x": {"min": data.min(0), "max": data.max(0), "mean": data.mean(0), "std": data.std(0)}}
    norm = Normalizer({"x": 2})
    norm.fit(stats, mode)
    y = norm.normalize("x", torch.from_numpy(data))
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[:, 0], torch.zeros(10))
    torch.testing.assert_close(norm.unnormalize("x", y), torch.from_numpy(data))


def test_state_dict_carries_statistics() -> None:
    a, b = Normalizer({"x/y.z": 2}), Normalizer({"x/y.z": 2})
    a.fit({"x/y.z": {"min": np.array([0.0, 1.0]), "max": np.array([2.0, 5.0]),
                     "mean": np.zeros(2), "std": np.ones(2)}}, "min_max")
    b.load_state_dict(a.state_dict())
    x = torch.tensor([[1.0, 3.0]])
    torch.testing.assert_close(b.normalize("x/y.z", x), torch.zeros(1, 2))
    # and back: unnormalizing uses the loaded statistics too
    torch.testing.assert_close(b.unnormalize("x/y.z", torch.zeros(1, 2)), x)


def test_errors_name_key_and_shape() -> None:
    norm = Normalizer({"x": 2})
    with pytest.raises(KeyError, match="'x'"):
        norm.fit({}, "min_max")
    with pytest.raises(ValueError, match="expected \\(2,\\)"):
        norm.fit({"x": {"min": np.zeros(3), "max": np.ones(3), "mean": np.zeros(3), "std": np.ones(3)}}, "min_max")
