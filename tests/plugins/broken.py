"""Deliberately broken plug-ins (and two sound ones): each breaks one part of the contract.

Loaded by file path (``tests/plugins/broken.py:Name``) exactly as a user's plug-in would be, so the
tests exercise discovery, ``check-defense``/``check-attack`` and the harness's refusal together.
"""

from __future__ import annotations

import time
import dataclasses
from collections.abc import Mapping

import torch

from bench import Attack, Defense, Observation, Option, Reconstruction, Unknown, Upload
from bench.functional import forward, loss_gradient
from bench.inversion import image_init
from bench.defenses.fedavg import FedAvg


def _with(obs: Observation, **changes) -> Observation:
    return Observation(**{**{f: getattr(obs, f) for f in obs.__dataclass_fields__}, **changes})


class WrongShape(FedAvg):
    """simulate() returns the classifier gradient transposed."""

    def observe(self, server, client, target, cohort, generator):
        obs = super().observe(server, client, target, cohort, generator)
        key = obs.public.classifier_key

        def simulate(x, y, unknowns):
            out = obs.simulate(x, y, unknowns)
            return {**out, key: out[key].t()}

        return _with(obs, simulate=simulate)


class WrongObserveShape(FedAvg):
    """observe() reports the classifier gradient flattened, so no simulation can match it."""

    def observe(self, server, client, target, cohort, generator):
        obs = super().observe(server, client, target, cohort, generator)
        key = obs.public.classifier_key
        return _with(obs, observed={**obs.observed, key: obs.observed[key].flatten()})


class MissingMethod(Defense):
    """Implements everything but observe()."""

    name = "missing-method"

    def init_server(self):
        return {}

    def client_update(self, server, client, data, generator):
        raise NotImplementedError

    def aggregate(self, server, uploads):
        return server

    def predict(self, server, client, x):
        raise NotImplementedError


class NotDifferentiable(FedAvg):
    """simulate() detaches its result (as if computed outside torch)."""

    def observe(self, server, client, target, cohort, generator):
        obs = super().observe(server, client, target, cohort, generator)
        return _with(obs, simulate=lambda x, y, u: {k: v.detach() for k, v in obs.simulate(x, y, u).items()})


class UndeclaredNoise(FedAvg):
    """Adds Gaussian noise to what it sends but claims an exact simulator."""

    def observe(self, server, client, target, cohort, generator):
        obs = super().observe(server, client, target, cohort, generator)
        noisy = {k: v + 0.01 * torch.randn(v.shape, generator=generator) for k, v in obs.observed.items()}
        return _with(obs, observed=noisy)


class Nondeterministic(FedAvg):
    """Draws its noise from an unseeded source (and declares it, so only determinism fails)."""

    def observe(self, server, client, target, cohort, generator):
        obs = super().observe(server, client, target, cohort, generator)
        g = torch.Generator().manual_seed(time.perf_counter_ns())
        noisy = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in obs.observed.items()}
        return _with(obs, observed=noisy, exact=False)


class IgnoresKnowledge(FedAvg):
    """Declares an unaware attacker but builds the same (adaptive) Observation for every level."""

    knowledge_levels = ("adaptive", "unaware")

    def observe(self, server, client, target, cohort, generator):
        return _with(super().observe(server, client, target, cohort, generator), knowledge="adaptive")


class LeaksState(FedAvg):
    """Keeps a private tensor on the client and sends it along with its update."""

    def init_client(self, client_id):
        return {"secret": torch.randn(16, generator=torch.Generator().manual_seed(client_id))}

    def client_update(self, server, client, data, generator):
        upload = super().client_update(server, client, data, generator)
        upload.buffers = {**upload.buffers, "debug": client["secret"]}
        return upload


class BadDefault(FedAvg):
    """Declares a default outside its own range."""

    options = FedAvg.options + (Option("clip", float, -1.0, "clipping norm", min=0.0),)


class NoVmap(FedAvg):
    """simulate() reads a Python number from a tensor, which torch.func.vmap cannot do."""

    def observe(self, server, client, target, cohort, generator):
        obs = super().observe(server, client, target, cohort, generator)

        def simulate(x, y, unknowns):
            if float(x.detach().abs().max()) > 1e6:
                raise ValueError("candidate out of range")
            return obs.simulate(x, y, unknowns)

        return _with(obs, simulate=simulate)


class NoVmapBareError(FedAvg):
    """simulate() raises a NotImplementedError without a message under torch.func.vmap."""

    def observe(self, server, client, target, cohort, generator):
        obs = super().observe(server, client, target, cohort, generator)

        def simulate(x, y, unknowns):
            try:
                float(x.detach().abs().max())  # a Python number: impossible under vmap
            except RuntimeError:
                raise NotImplementedError from None
            return obs.simulate(x, y, unknowns)

        return _with(obs, simulate=simulate)


class PrivateHead(FedAvg):
    """Sound: the classifier head stays on the client; the server sees the body gradient only and
    must guess the head (an unknown it may optimise)."""

    def init_client(self, client_id):
        g = torch.Generator().manual_seed(100 + client_id)
        head = self.task.new_model().get_submodule(self.task.classifier)
        return {f"head.{k}": 0.1 * torch.randn(v.shape, generator=g) for k, v in head.named_parameters()}

    def _params(self, server, head: Mapping[str, torch.Tensor]):
        body = {k: v for k, v in server.items() if not k.startswith(self.task.classifier + ".")}
        return body, {**body, **{f"{self.task.classifier}.{k.split('.', 1)[1]}": v for k, v in head.items()}}

    def client_update(self, server, client, data, generator):
        body, full = self._params(server, client)
        grads = loss_gradient(self.model, full, data.x, data.y, create_graph=False)
        return Upload({k: grads[k].detach() for k in body}, len(data), "gradient")

    def predict(self, server, client, x):
        return forward(self.model, self._params(server, client)[1], x)

    def observe(self, server, client, target, cohort, generator):
        obs = super().observe(server, client, target, cohort, generator)
        body, _ = self._params(server, client)

        def simulate(x, y, unknowns):
            grads = loss_gradient(self.model, self._params(server, unknowns)[1], x, y, create_graph=True)
            return {k: grads[k] for k in body}

        server_head = {f"head.{k.split('.')[-1]}": v for k, v in server.items() if k not in body}
        unknowns = {
            k: Unknown(tuple(v.shape), "private head", v.clone(), optimisable=True) for k, v in server_head.items()
        }
        observed = {k: v.detach() for k, v in simulate(target.x, target.y, client).items()}
        return _with(
            obs,
            observed=observed,
            simulate=simulate,
            unknowns=unknowns,
            knowledge=self.knowledge,
            public=dataclasses.replace(obs.public, classifier_key=None),
        )


class GuessIsTruth(PrivateHead):
    """Hands the client's true head to the server as its 'guess'."""

    def observe(self, server, client, target, cohort, generator):
        obs = super().observe(server, client, target, cohort, generator)
        return _with(
            obs, unknowns={k: Unknown(u.shape, u.description, client[k].clone()) for k, u in obs.unknowns.items()}
        )


class GuessIsTruthTrainedInPlace(GuessIsTruth):
    """Hands the client's true head to the server, then trains the head in place in client_update()
    (so the state after the round no longer equals the guess)."""

    def client_update(self, server, client, data, generator):
        upload = super().client_update(server, client, data, generator)
        for value in client.values():
            value.add_(0.01)
        return upload


# -- attacks ------------------------------------------------------------------------------------
class _Random(Attack):
    """Returns random images and labels (sound, and fast)."""

    options = (Option("scale", float, 1.0, "std of the random images", min=0.0),)

    def reconstruct(self, obs, generator, progress) -> Reconstruction:
        progress.start(1, "random")
        progress.advance(1)
        x = image_init(obs, generator) * self.opt.scale
        labels = torch.randint(0, obs.public.num_classes, (obs.public.num_images,), generator=generator)
        return Reconstruction(x, labels, loss=0.0, iterations=1)


class RandomAttack(_Random):
    pass


class WrongShapeAttack(_Random):
    """Returns one image fewer than the batch holds."""

    def reconstruct(self, obs, generator, progress):
        rec = super().reconstruct(obs, generator, progress)
        return Reconstruction(rec.images[1:], rec.labels[1:], rec.loss, rec.iterations)


class NondeterministicAttack(_Random):
    """Ignores the generator it is given."""

    def reconstruct(self, obs, generator, progress):
        return super().reconstruct(obs, torch.Generator().manual_seed(time.perf_counter_ns()), progress)


class MutatesObservation(_Random):
    """Optimises the server's guesses in place instead of copies."""

    def reconstruct(self, obs, generator, progress):
        for u in obs.unknowns.values():
            u.guess.add_(1.0)
        for v in obs.observed.values():
            v.mul_(1.0001)
        return super().reconstruct(obs, generator, progress)


class MissingReconstruct(Attack):
    """Implements nothing."""
