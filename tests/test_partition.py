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


def test_small_data_gets_a_split_that_fits():
    """200 images, 20 per class (a user's own MNIST-format data), under the default federation."""
    train, test = labels(20), labels(20)
    splits = split_clients("dominant", train, test, 10, 20, torch.Generator().manual_seed(0))
    assert len(splits) == 20
    sizes = {len(s.train) for s in splits}
    assert len(sizes) == 1 and 1 <= sizes.pop() <= 10  # equal sizes; 200 / 20 is the most possible
    seen = torch.cat([s.train for s in splits])
    assert len(seen) == len(set(seen.tolist()))
    for client, s in enumerate(splits):  # still skewed: most examples from the client's label group
        group = set(label_groups(10)[client % 5])
        assert sum(int(v) in group for v in train[s.train]) > len(s.train) / 2
    assert all(len(s.test) >= 1 for s in splits)
    # the largest fitting size: one more no longer fits the seeded split
    n = len(splits[0].train)
    with pytest.raises(BenchError, match=f"use --train-per-client {n} or fewer"):
        split_clients("dominant", train, test, 10, 20, torch.Generator().manual_seed(0), n + 1)


@pytest.mark.parametrize("kind", ["dominant", "iid"])
def test_too_many_clients_names_the_flag_and_the_most_that_work(kind):
    train, test = labels(20), labels(20)
    with pytest.raises(BenchError, match=r"300 clients leave no train examples per client.*use --clients \d+ or fewer"):
        split_clients(kind, train, test, 10, 300, torch.Generator().manual_seed(0))
    try:
        split_clients(kind, train, test, 10, 300, torch.Generator().manual_seed(0))
    except BenchError as exc:
        most = int(str(exc).split("--clients ")[1].split()[0])
    assert 20 <= most <= 200
    splits = split_clients(kind, train, test, 10, most, torch.Generator().manual_seed(0))
    assert all(len(s.train) >= 1 and len(s.test) >= 1 for s in splits)
    with pytest.raises(BenchError, match="leave no"):
        split_clients(kind, train, test, 10, most + 1, torch.Generator().manual_seed(0))


def test_small_test_set_error_is_about_the_test_side():
    with pytest.raises(BenchError, match=r"leave no test examples .*use --clients \d+ or fewer"):
        split_clients("dominant", labels(20), labels(1), 10, 20, torch.Generator().manual_seed(0))


def test_two_hundred_own_mnist_images_train_under_the_default_federation(tmp_path):
    from bench.cli import main
    from bench.results import read_rows
    from tests.tv_fixtures import make_mnist_like

    make_mnist_like(tmp_path / "data", "MNIST", train_n=200, test_n=200)  # 20 per class
    out = tmp_path / "out"
    assert (
        main(
            [
                "train",
                "--defense",
                "fedavg",
                "--dataset",
                "mnist",
                "--data-root",
                str(tmp_path / "data"),
                "--rounds",
                "1",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    rows, problems = read_rows(out / "results.jsonl")
    assert not problems and rows[0]["clients"] == 20
