import pytest
import torch

from fastgan.stats import RunningStats


def test_groups_have_their_own_counts_and_means():
    s = RunningStats({"train": ("a", "b"), "R1": ("r",)}, "cpu")
    assert s.names == ("a", "b", "_n_train", "r", "_n_R1")
    s.add("train", torch.tensor(1.0), torch.tensor(-2.0))
    s.add("train", torch.tensor(3.0), torch.tensor(4.0))
    assert s["a"].item() == 4.0 and s["_n_train"].item() == 2.0
    assert s.read() == {"a": 2.0, "b": 1.0}       # R1 ran no step: left out
    assert s.buffer.tolist() == [0.0] * 5          # a read resets the sums
    s.add("R1", torch.tensor(0.5))
    assert s.read() == {"r": 0.5}


def test_add_takes_one_value_per_name():
    s = RunningStats({"train": ("a", "b")}, "cpu")
    with pytest.raises(RuntimeError):
        s.add("train", torch.tensor(1.0))
