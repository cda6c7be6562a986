import pytest
import torch

from bench.data.partition import label_groups, max_per_client, split_clients
from bench.errors import BenchError


def labels(n_per_class=100, classes=10):
    return torch.arange(classes).repeat_interleave(n_per_class)


def test_paper_groups():
    assert label_groups(10) == [[0, 1, 2], [2, 3, 4], [4, 5, 6], [6, 7, 8], [0, 8, 9]]
    assert [len(g) for g in label_groups(62)] == [10, 26, 26]


def test_dominant_split_is_eighty_percent_group_and_disjoint():
    train, test = labels(100), labels(30)
    splits = split_clients("dominant", train, test, 10, 10, torch.Generator().manual_seed(0), 60, 15)
    seen = torch.cat([s.train for s in splits])
    assert len(seen) == len(set(seen.tolist())) == 600
    for client, s in enumerate(splits):
        group = set(label_groups(10)[client % 5])
        y = train[s.train]
        in_group = sum(int(v) in group for v in y)
        # 48 from the group + the group's share of the 12 spread over all classes
        assert len(y) == 60 and 48 <= in_group <= 48 + 12
        assert len(set(y.tolist())) >= 8  # the 20 % covers (almost) every class
        ty = test[s.test]
        assert sum(int(v) in group for v in ty) >= 12  # test skewed the same way


def test_iid_split_sizes_and_disjointness():
    splits = split_clients("iid", labels(10), labels(5), 10, 4, torch.Generator().manual_seed(0))
    assert [len(s.train) for s in splits] == [25] * 4
    assert len(set(torch.cat([s.train for s in splits]).tolist())) == 100


def test_default_size_is_feasible_and_overflow_is_a_clear_error():
    train = labels(500)
    n = max_per_client("dominant", train, 10, 20)
    splits = split_clients("dominant", train, labels(100), 10, 20, torch.Generator().manual_seed(0))
    assert all(len(s.train) == n for s in splits) and n > 100
    with pytest.raises(BenchError, match="not enough train examples"):
        split_clients("dominant", train, labels(100), 10, 20, torch.Generator().manual_seed(0), 400)
    with pytest.raises(BenchError, match="valid: iid, dominant"):
        split_clients("zipf", train, labels(100), 10, 20, torch.Generator())


def test_split_is_seeded():
    a = split_clients("dominant", labels(50), labels(10), 10, 5, torch.Generator().manual_seed(3))
    b = split_clients("dominant", labels(50), labels(10), 10, 5, torch.Generator().manual_seed(3))
    assert all(torch.equal(x.train, y.train) for x, y in zip(a, b))
