"""Splitting a data set across federated clients: IID, or HyperFL's "dominant label group" non-IID.

The non-IID split follows the HyperFL paper and code: each client draws ``dominant_fraction``
(80 %) of its examples from a group of three labels chosen by its index modulo 5 — groups
[[0,1,2],[2,3,4],[4,5,6],[6,7,8],[8,9,0]] for 10 classes, i.e. labels 2g, 2g+1, 2g+2 (mod C) —
and the remaining 20 % spread evenly over all classes. For EMNIST byclass (62 classes) the groups
are digits / upper case / lower case by index modulo 3, as in the paper. Test sets are skewed the
same way. Examples are drawn without replacement from shared per-class pools.

Sizes. Unless given, each client gets the most examples the split can give every client: the
guaranteed bound of :func:`max_per_client` when it leaves at least one, otherwise (small data, e.g.
200 images over 20 clients) the largest size the seeded split actually fits, found by dry runs of the
split on a copy of the generator (:func:`largest_per_client`). When no size fits, the error names
``--clients`` and the largest number of clients that would work (:func:`largest_clients`); an
explicit ``--train-per-client``/``--test-per-client`` that does not fit names the largest that does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.errors import BenchError

PARTITIONS = ("iid", "dominant")


@dataclass(frozen=True)
class ClientSplit:
    """Indices into the data set's train and test arrays owned by one client."""

    train: torch.Tensor
    test: torch.Tensor


def label_groups(num_classes: int, group_size: int = 3, num_groups: int = 5) -> list[list[int]]:
    """The dominant label groups (see module docstring)."""
    if num_classes == 62:  # EMNIST byclass: digits, upper case, lower case
        return [list(range(0, 10)), list(range(10, 36)), list(range(36, 62))]
    return [sorted({(2 * g + j) % num_classes for j in range(group_size)}) for g in range(num_groups)]


class _Pools:
    """Per-class shuffled index pools, consumed without replacement."""

    def __init__(self, labels: torch.Tensor, num_classes: int, generator: torch.Generator, what: str) -> None:
        self.what = what
        self.pools = []
        for c in range(num_classes):
            idx = torch.nonzero(labels == c).flatten()
            self.pools.append(idx[torch.randperm(len(idx), generator=generator)].tolist())

    def take(self, label: int, count: int) -> list[int]:
        pool = self.pools[label]
        if count > len(pool):
            raise BenchError(
                f"not enough {self.what} examples of class {label} for this split; "
                f"use fewer clients or fewer examples per client"
            )
        out, self.pools[label] = pool[:count], pool[count:]
        return out


def _spread(total: int, bins: list[int], generator: torch.Generator) -> dict[int, int]:
    """Split ``total`` as evenly as possible over ``bins``; leftovers go to randomly chosen bins."""
    base, extra = divmod(total, len(bins))
    counts = {b: base for b in bins}
    for i in torch.randperm(len(bins), generator=generator)[:extra].tolist():
        counts[bins[i]] += 1
    return counts


def dominant_label_split(
    labels: torch.Tensor,
    num_classes: int,
    num_clients: int,
    per_client: int,
    generator: torch.Generator,
    dominant_fraction: float = 0.8,
    what: str = "train",
) -> list[torch.Tensor]:
    groups = label_groups(num_classes)
    pools = _Pools(labels, num_classes, generator, what)
    out = []
    for client in range(num_clients):
        group = groups[client % len(groups)]
        n_dom = int(round(dominant_fraction * per_client))
        counts = _spread(n_dom, group, generator)
        for label, n in _spread(per_client - n_dom, list(range(num_classes)), generator).items():
            counts[label] = counts.get(label, 0) + n
        idx = [i for label, n in sorted(counts.items()) for i in pools.take(label, n)]
        out.append(torch.tensor(idx, dtype=torch.long)[torch.randperm(len(idx), generator=generator)])
    return out


def iid_split(
    labels: torch.Tensor, num_clients: int, per_client: int, generator: torch.Generator, what: str = "train"
) -> list[torch.Tensor]:
    if per_client * num_clients > len(labels):
        raise BenchError(f"{num_clients} clients × {per_client} {what} examples exceed the {len(labels)} available")
    perm = torch.randperm(len(labels), generator=generator)
    return [perm[i * per_client : (i + 1) * per_client] for i in range(num_clients)]


def _label_rates(num_classes: int, num_clients: int, dominant_fraction: float) -> list[float]:
    """Per label, the examples the dominant split asks of it per example per client, summed over clients."""
    groups = label_groups(num_classes)
    rate = [(1 - dominant_fraction) / num_classes * num_clients for _ in range(num_classes)]
    for client in range(num_clients):
        group = groups[client % len(groups)]
        for label in group:
            rate[label] += dominant_fraction / len(group)
    return rate


def max_per_client(
    kind: str, labels: torch.Tensor, num_classes: int, num_clients: int, dominant_fraction: float = 0.8
) -> int:
    """The most examples per client the split can give every client without running out."""
    if kind == "iid":
        return len(labels) // num_clients
    rate = _label_rates(num_classes, num_clients, dominant_fraction)
    available = torch.bincount(labels, minlength=num_classes).tolist()
    # rounding hands each label at most one extra example per client
    return max(0, int(min((available[c] - num_clients) / rate[c] for c in range(num_classes) if rate[c] > 0)))


def _copy(generator: torch.Generator) -> torch.Generator:
    """A generator in the same state (a dry run must not consume the real one)."""
    clone = torch.Generator(device=generator.device)
    clone.set_state(generator.get_state())
    return clone


def _split(
    kind: str,
    labels: torch.Tensor,
    num_classes: int,
    num_clients: int,
    per_client: int,
    generator: torch.Generator,
    what: str,
) -> list[torch.Tensor]:
    if kind == "iid":
        return iid_split(labels, num_clients, per_client, generator, what)
    return dominant_label_split(labels, num_classes, num_clients, per_client, generator, what=what)


def fits(
    kind: str, labels: torch.Tensor, num_classes: int, num_clients: int, per_client: int, generator: torch.Generator
) -> bool:
    """Whether the split of ``per_client`` examples each succeeds with this generator state (a dry run)."""
    try:
        _split(kind, labels, num_classes, num_clients, per_client, _copy(generator), "dry-run")
    except BenchError:
        return False
    return True


def _expected_bound(labels: torch.Tensor, num_classes: int, num_clients: int, dominant_fraction: float = 0.8) -> int:
    """The per-client size at which the dominant split's *expected* demand of some label reaches its supply
    (no split can be larger; rounding may make it smaller)."""
    rate = _label_rates(num_classes, num_clients, dominant_fraction)
    available = torch.bincount(labels, minlength=num_classes).tolist()
    return max(0, int(min(available[c] / rate[c] for c in range(num_classes) if rate[c] > 0)))


def largest_per_client(
    kind: str,
    labels: torch.Tensor,
    num_classes: int,
    num_clients: int,
    generator: torch.Generator,
    start: int | None = None,
) -> int:
    """The most examples per client (at most ``start``) the split gives every client from this generator
    state: :func:`max_per_client` when that fits and leaves at least one, else the largest size whose
    dry run succeeds; 0 when none does."""
    if kind == "iid":
        return min(len(labels) // num_clients, start or len(labels))
    safe = max_per_client(kind, labels, num_classes, num_clients)
    candidates = [safe] if safe >= 1 else []
    candidates += range(_expected_bound(labels, num_classes, num_clients), 0, -1)
    for n in candidates:
        if (start is None or n <= start) and fits(kind, labels, num_classes, num_clients, n, generator):
            return n
    return 0


def _fitting_sizes(
    kind: str,
    train_labels: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    num_clients: int,
    generator: torch.Generator,
) -> tuple[int, int]:
    """The default train and test sizes per client for this generator state (0: none fits). The test
    split draws from the generator after the train split, so the train split is run on a copy first."""
    g = _copy(generator)
    n_train = largest_per_client(kind, train_labels, num_classes, num_clients, g)
    if n_train < 1:
        return 0, 0
    _split(kind, train_labels, num_classes, num_clients, n_train, g, "train")
    return n_train, largest_per_client(kind, test_labels, num_classes, num_clients, g)


def largest_clients(
    kind: str,
    train_labels: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    num_clients: int,
    generator: torch.Generator,
) -> int:
    """The largest number of clients below ``num_clients`` whose default split leaves every client at least
    one train and one test example (0 when even one client gets none)."""
    for k in range(min(num_clients - 1, len(train_labels), len(test_labels)), 0, -1):  # each needs one of each
        if min(_fitting_sizes(kind, train_labels, test_labels, num_classes, k, generator)) >= 1:
            return k
    return 0


def _size(
    kind: str,
    labels: torch.Tensor,
    num_classes: int,
    num_clients: int,
    generator: torch.Generator,
    requested: int | None,
    what: str,
) -> int:
    """The per-client size for one side (train or test): the requested one, checked, or the largest that fits."""
    if requested is not None:
        if not fits(kind, labels, num_classes, num_clients, requested, generator):
            largest = largest_per_client(kind, labels, num_classes, num_clients, generator, start=requested)
            hint = (
                f"use --{what}-per-client {largest} or fewer, or fewer --clients" if largest else "use fewer --clients"
            )
            raise BenchError(
                f"not enough {what} examples for {num_clients} clients × {requested} under the {kind} "
                f"partition ({len(labels)} {what} examples); {hint}"
            )
        return requested
    return largest_per_client(kind, labels, num_classes, num_clients, generator)


def split_clients(
    kind: str,
    train_labels: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    num_clients: int,
    generator: torch.Generator,
    train_per_client: int | None = None,
    test_per_client: int | None = None,
) -> list[ClientSplit]:
    """Give each of ``num_clients`` clients its own train and test indices.

    ``*_per_client`` default to the most every client can get (see the module docstring).
    """
    if kind not in PARTITIONS:
        raise BenchError(f"unknown partition {kind!r}; valid: {', '.join(PARTITIONS)}")
    if num_clients < 1:
        raise BenchError(f"number of clients must be >= 1, got {num_clients}")
    start = _copy(generator)
    out = []
    for what, labels, requested in (("train", train_labels, train_per_client), ("test", test_labels, test_per_client)):
        n = _size(kind, labels, num_classes, num_clients, generator, requested, what)
        if n < 1:
            k = largest_clients(kind, train_labels, test_labels, num_classes, num_clients, start)
            hint = (
                f"use --clients {k} or fewer"
                if k
                else "no number of clients fits" + (": use --partition iid" if kind != "iid" else "")
            )
            raise BenchError(
                f"{num_clients} clients leave no {what} examples per client under the {kind} partition "
                f"({len(labels)} {what} examples, {num_classes} classes); {hint}"
            )
        out.append(_split(kind, labels, num_classes, num_clients, n, generator, what))
    return [ClientSplit(tr, te) for tr, te in zip(*out)]
