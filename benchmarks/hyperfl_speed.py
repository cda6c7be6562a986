"""What HyperFL costs on CPU: a client step, and one attack step under each observation.

All timings come from one run on the same machine (ratios are what to read; absolute numbers depend
on the machine and its load). The CIFAR CNN on 3×32×32 inputs, batch 50 for training steps, batch 1
for attack steps (simulate + backward of a squared-L2 gradient distance, as one attack iteration).

  OMP_NUM_THREADS=1 python benchmarks/hyperfl_speed.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.round import Round  # noqa: E402
from bench.defense import FLTask  # noqa: E402
from bench.models.cnn import CNN  # noqa: E402
from bench.threat import LocalData  # noqa: E402
from bench.defenses.fedavg import FedAvg  # noqa: E402
from bench.defenses.hyperfl import HyperFL, local_round  # noqa: E402


def timed(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    began = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - began) / repeats


def task(local_epochs: int) -> FLTask:
    cnn = CNN()
    return FLTask(
        new_model=lambda: cnn.build((3, 32, 32), 10),
        model_name="cnn",
        classifier="fc2",
        image_shape=(3, 32, 32),
        num_classes=10,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        device=torch.device("cpu"),
        local_epochs=local_epochs,
    )


def attack_step(obs, x, y, unknowns) -> Callable[[], None]:
    x = x.clone().requires_grad_(True)

    def step() -> None:
        sim = obs.simulate(x, y, unknowns)
        loss = sum(((sim[k] - obs.observed[k]) ** 2).sum() for k in sim)
        torch.autograd.grad(loss, [x])

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--local-epochs", type=int, default=5)
    args = p.parse_args()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    batch = LocalData(torch.randn(50, 3, 32, 32, generator=g), torch.randint(0, 10, (50,), generator=g), 50)
    one = LocalData(batch.x[:1], batch.y[:1], 1)
    results: dict[str, float] = {}

    for name, defense in (("fedavg", FedAvg(preset="hyperfl-paper")), ("hyperfl", HyperFL())):
        defense.setup(task(1))
        server, client = defense.init_server(), defense.init_client(0)
        # fedavg: one SGD step; hyperfl: one head step + one hypernetwork step
        results[f"client round, 1 epoch on one batch of 50 ({name})"] = timed(
            lambda: defense.client_update(server, dict(client), batch, None), args.repeats
        )

    fedavg = FedAvg()
    fedavg.setup(task(1))
    obs = fedavg.observe(fedavg.init_server(), {}, one, [], None)
    results["attack step: fedavg FedSGD"] = timed(attack_step(obs, one.x, one.y, {}), args.repeats)

    for attacker, setting in (("adaptive", "fedsgd"), ("oracle", "fedsgd"), ("oracle", "local")):
        d = HyperFL()
        d.use_knowledge(attacker)
        if setting == "local":
            d.use_round(Round("local", 1, 1, args.local_epochs))
        d.setup(task(args.local_epochs))
        server, client = d.init_server(), d.init_client(0)
        obs = d.observe(server, client, one, [], torch.Generator().manual_seed(1))
        unknowns = {k: u.guess for k, u in obs.unknowns.items()}
        results[f"attack step: hyperfl {attacker} {setting}"] = timed(
            attack_step(obs, one.x, one.y, unknowns), args.repeats
        )
        if setting == "local":
            hyper = {f"hypernetwork.{k}": v for k, v in server.items()}
            private = {k: client[k] for k in unknowns}
            x = one.x.clone().requires_grad_(True)

            def unrolled() -> None:
                b = list(LocalData(x, one.y, 1).batches())
                new, _ = local_round(d.model, hyper, private, b, b * args.local_epochs, d.protocol, True)
                loss = sum(((new[f"hypernetwork.{k}"] - server[k] - obs.observed[k]) ** 2).sum() for k in server)
                torch.autograd.grad(loss, [x])

            results["attack step: hyperfl oracle local, unrolled explicitly (not used)"] = timed(unrolled, args.repeats)

    base = results["attack step: fedavg FedSGD"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), local epochs {args.local_epochs}")
    for name, seconds in results.items():
        ratio = f"{seconds / base:8.1f}× fedavg attack step" if name.startswith("attack") else ""
        print(f"{name:<70} {seconds * 1e3:9.1f} ms  {ratio}")


if __name__ == "__main__":
    main()
