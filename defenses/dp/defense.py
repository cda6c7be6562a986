"""DP — differential privacy: DP-SGD (per example) or DP-FedAvg-style clipping (per client), Opacus' RDP accountant.

``level=sample`` (DP-SGD, Abadi et al. 2016, the way Opacus computes it): at every local step each
example's gradient is clipped to L2 norm ≤ ``clip`` (C), the clipped gradients are summed, Gaussian
noise N(0, σ²C²) is added to the sum, and the result is divided by the batch size. Per-example
gradients come from ``torch.func`` (vmap over grad), not a Python loop. The client runs its usual
local SGD on these gradients and sends the gradient (one step) or the update, as FedAvg does. This is
the HyperFL paper's "DP-FedAvg" baseline as its official code runs it (per-example clip 0.04, σ from
Opacus' ``get_noise_multiplier``: preset ``hyperfl-paper``).

``level=client``: the client runs plain local SGD, clips its whole upload to L2 norm ≤ C and adds
N(0, σ²C²) to every coordinate. The *client* adds the noise because the honest-but-curious server is
the adversary and must never see the clean update; the server then sees each noised upload *alone*.
That is local DP, not the central DP-FedAvg of McMahan et al. 2018, where a trusted aggregator adds
noise to the *sum* of the clipped updates and one client's presence changes that sum by at most C
(add/remove neighbours, amplified by client sampling). Here a neighbouring input replaces the client's
data by any other (the upload is always sent), so two clipped uploads differ by up to 2C: the
replace-one sensitivity is 2C, and the accountant runs at σ/2 (``accounting_noise_multiplier``)
with q = 1 (the server knows the client took part). ``target_epsilon`` is calibrated under the
same model (σ = 2 × Opacus' σ for q = 1). Every row names its model in ``dp_model``.

σ (``noise_multiplier``) is given, or calibrated from ``target_epsilon`` and ``delta`` with Opacus'
``get_noise_multiplier`` for the run's sampling rate and ``epochs`` (then ``noise_multiplier`` is
ignored; the σ used is in every row's metrics).

Two budgets are reported, both from Opacus' RDP analysis (``opacus.accountants.analysis.rdp``, the
functions its ``RDPAccountant`` calls) on the order grid :data:`RDP_ORDERS`:

* ``epsilon``: the client's whole history of (σ, q, steps), kept in its private state — q = batch/n
  and one step per local SGD step (``sample``), q = 1 and one step per round (``client``). At sample
  level it includes amplification by subsampling (and assumes Poisson sampling, as Opacus does).
  Attack rows account the target client's earlier rounds plus the observed exchange; training rows
  the rounds done so far.
* ``epsilon_exchange``: the observed exchange alone at q = 1 — no amplification by subsampling. An
  attacked batch is the target's by construction and every reconstruction is conditioned on its
  examples being in it, so the subsampling that ``epsilon`` credits does not hide them from this
  attacker. Sample level: the steps of the exchange that contain a given example (its epochs, head
  epochs included); client level: one step.

Opacus' default orders stop at 63, where small-q, large-σ budgets (e.g. σ = 4, q = 1/299) find their
optimum at the grid's edge and report that floor. :data:`RDP_ORDERS` spans 1 + 1e-8 … 1024: dense
fractional orders below 12 and integer orders above (Opacus' series for fractional orders loses
precision at large orders — it returned a negative RDP at order 518.5 for σ = 10.6, q = 1/12 — and
its integer series overflows above order ~1030). The optimal order is recorded
(``epsilon_order``, ``epsilon_exchange_order``); when it lies on the grid's edge Opacus' warning is
let through and ``epsilon_order_at_edge`` is true (the ε is then a valid but loose bound).

The attacker knows the protocol (level, C, σ) but not the noise draw: its simulator is the
noise-free computation. Clipping is a deterministic, public step of the protocol, so the simulator
replays it (knowledge ``adaptive``, the default); knowledge ``unaware`` simulates plain FedAvg instead
(an attacker that ignores the mechanism). With σ = 0 and clipping replayed, the simulator reproduces
the observation exactly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from bench.defense import ClientState, ServerState
from bench.errors import BenchError
from bench.functional import GradientFn, loss_gradient
from bench.options import Option
from bench.sgd_defense import SGD_OPTIONS, SGDDefense
from bench.threat import LocalData, Tensors

from bench.defenses.dp.accounting import calibrated_noise_multiplier, history_of, privacy_spent, with_segment
from bench.defenses.dp.mechanism import (
    DEFAULT_NOISE_MULTIPLIER,
    HISTORY,
    LEVELS,
    add_noise,
    clip_tensors,
    dp_sgd_gradient,
)


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class DP(SGDDefense):
    """Differential privacy: DP-SGD per example or per-client clipping + Gaussian noise (local DP), RDP accounting."""

    name = "dp"
    description = __doc__
    options = (
        *SGD_OPTIONS,
        Option(
            "level",
            str,
            "sample",
            "sample: DP-SGD, clip each example's gradient at every local step; "
            "client: clip and noise the client's whole upload (local DP, replace-one sensitivity 2C)",
            choices=LEVELS,
        ),
        Option(
            "clip", float, 1.0, "clipping norm C (per example, or of the whole upload)", min=0.0, min_exclusive=True
        ),
        Option(
            "noise_multiplier",
            float,
            DEFAULT_NOISE_MULTIPLIER,
            "σ: the noise std is σ·C (ignored, and not to be given, when target_epsilon is set)",
            min=0.0,
        ),
        Option(
            "target_epsilon",
            float,
            math.inf,
            "calibrate σ with Opacus so the run spends this ε (needs epochs); inf: no target, use noise_multiplier",
            min=0.0,
            min_exclusive=True,
        ),
        Option("delta", float, 1e-5, "δ of the (ε, δ) guarantee", min=0.0, max=1.0, min_exclusive=True),
        Option(
            "epochs",
            int,
            0,
            "passes the target_epsilon covers: rounds × local epochs (sample), rounds "
            "(client); HyperFL: 200 × 5; 0: not set",
            min=0,
        ),
    )
    presets = {
        "hyperfl-paper": {
            "lr": 0.02,
            "momentum": 0.5,
            "weight_decay": 5e-4,
            "level": "sample",
            "clip": 0.04,
            "target_epsilon": 4.0,
            "delta": 1e-5,
            "epochs": 1000,
        }
    }

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        given = set(values) | set(self.presets.get(str(values.get("preset")), {}))
        if self.calibrates and "noise_multiplier" in given:
            raise BenchError("defense 'dp' takes noise_multiplier or target_epsilon, not both")
        if self.calibrates and self.opt.epochs < 1:
            raise BenchError(
                "defense 'dp' option target_epsilon needs epochs (passes the budget covers: "
                "rounds × local epochs; HyperFL: 1000)"
            )
        self._calibrated: dict[float, float] = {}

    @property
    def calibrates(self) -> bool:
        """True when σ comes from target_epsilon (finite) rather than noise_multiplier."""
        return math.isfinite(self.opt.target_epsilon)

    def setup(self, task) -> None:
        super().setup(task)
        if has_batch_norm(self.model):
            raise BenchError(
                f"defense 'dp' needs a model without BatchNorm ({task.model_name} has it: per-example "
                f"gradients are undefined with batch statistics and running statistics would leave "
                f"the client unnoised); use lenet or cnn"
            )

    # --- the mechanism's parameters -------------------------------------------------------------
    def sample_rate(self, data: LocalData) -> float:
        """q: the share of the client's examples one accountant step touches (1 at client level)."""
        return 1.0 if self.opt.level == "client" else min(1.0, data.batch_size / data.population_size())

    def steps(self, data: LocalData) -> int:
        """Accountant steps of one exchange: local SGD steps (sample level) or 1 (client level)."""
        return 1 if self.opt.level == "client" else self.active_protocol.num_steps(data)

    def exchange_steps(self, data: LocalData) -> int:
        """Steps of one exchange that contain a given example of ``data`` (for ``epsilon_exchange``):
        its epochs, head epochs included (sample level); 1 (client level)."""
        if self.opt.level == "client":
            return 1
        protocol = self.active_protocol
        return protocol.local_epochs + protocol.head_epochs

    @property
    def sensitivity_factor(self) -> float:
        """The L2 sensitivity in units of C: 1 (sample level, add/remove one example), 2 (client level,
        replace-one: the server sees the client's clipped upload alone)."""
        return 2.0 if self.opt.level == "client" else 1.0

    def dp_model(self) -> str:
        """The neighbouring relation and sensitivity the accountant assumes, in words (recorded in every row)."""
        if self.opt.level == "client":
            return "local (client noises, server sees each upload), replace-one client data, sensitivity 2C"
        return "example-level DP-SGD (client noises each step), add/remove one example, sensitivity C"

    def noise_multiplier(self, q: float) -> float:
        """σ for an exchange at sampling rate q (the noise std is σC): the given one, or Opacus' calibration
        for target_epsilon under :meth:`dp_model` (client level: twice Opacus' σ, for sensitivity 2C)."""
        if not self.calibrates:
            return float(self.opt.noise_multiplier)
        if q not in self._calibrated:
            self._calibrated[q] = self.sensitivity_factor * calibrated_noise_multiplier(
                self.opt.target_epsilon, self.opt.delta, q, self.opt.epochs
            )
        return self._calibrated[q]

    def privacy_metrics(
        self, history: list[tuple[float, float, int]], sigma: float, q: float, exchange_steps: int
    ) -> dict[str, Any]:
        """The row's privacy columns: the accounted ε of ``history`` (σ's there are already the accounting
        ones) and the ε of one exchange at q = 1 (module docstring)."""
        accounted = privacy_spent(history, self.opt.delta)
        sigma_acc = sigma / self.sensitivity_factor
        exchange = privacy_spent([(sigma_acc, 1.0, exchange_steps)], self.opt.delta)
        return {
            "epsilon": accounted.epsilon,
            "epsilon_order": accounted.order,
            "epsilon_exchange": exchange.epsilon,
            "epsilon_exchange_order": exchange.order,
            "epsilon_order_at_edge": accounted.at_edge or exchange.at_edge,
            "exchange_steps": exchange_steps,
            "delta": self.opt.delta,
            "noise_multiplier": sigma,
            "accounting_noise_multiplier": sigma_acc,
            "sensitivity": self.sensitivity_factor * self.opt.clip,
            "dp_model": self.dp_model(),
            "clip": self.opt.clip,
            "level": self.opt.level,
            "sample_rate": q,
            "dp_steps": sum(n for _, _, n in history),
            "accountant": "opacus-rdp",
        }

    # --- the client's computation (SGDDefense hooks) ---------------------------------------------
    def step_gradient(self, data: LocalData, generator: torch.Generator | None) -> GradientFn:
        """DP-SGD's clipped, noised per-example gradient (sample level); the plain one (client level)."""
        if self.opt.level == "client":
            return loss_gradient
        return dp_sgd_gradient(self.opt.clip, self.noise_multiplier(self.sample_rate(data)), generator)

    def replay_gradient(self, data: LocalData) -> GradientFn:
        """The noise-free step: clipping is a public, deterministic step of the protocol."""
        return dp_sgd_gradient(self.opt.clip) if self.opt.level == "sample" else loss_gradient

    def transform(
        self, payload: Tensors, data: LocalData, server: ServerState, generator: torch.Generator | None
    ) -> Tensors:
        """DP-FedAvg's clipping and noising of the whole upload (client level); sample level is done per step."""
        if self.opt.level == "sample":
            return payload
        sigma = self.noise_multiplier(self.sample_rate(data))
        return add_noise(clip_tensors(payload, self.opt.clip), sigma * self.opt.clip, generator)

    def replay(self, simulated: Tensors, observed: Tensors | None) -> Tensors:
        return clip_tensors(simulated, self.opt.clip) if self.opt.level == "client" else simulated

    def exact_replay(self) -> bool:
        return not self.calibrates and self.opt.noise_multiplier == 0

    def account(self, client: ClientState, data: LocalData) -> dict[str, Any]:
        """One exchange more in the client's accountant history; the (ε, δ) spent so far."""
        q = self.sample_rate(data)
        sigma = self.noise_multiplier(q)
        history = with_segment(history_of(client), sigma / self.sensitivity_factor, q, self.steps(data))
        client[HISTORY] = torch.tensor(history, dtype=torch.float64)
        return self.privacy_metrics(history, sigma, q, self.exchange_steps(data))

    def public_parameters(self) -> dict[str, Any]:
        sigma = None if self.calibrates else self.opt.noise_multiplier  # calibrated σ depends on q: in the metrics
        return {"dp_level": self.opt.level, "clip": self.opt.clip, "noise_multiplier": sigma}

    def observation_notes(self, target: LocalData, observed: Tensors) -> list[str]:
        q = self.sample_rate(target)
        sigma = self.noise_multiplier(q)
        notes = [
            (
                f"dp level={self.opt.level}: the server sees the clipped, noised upload (sigma={sigma:.4g}, "
                f"C={self.opt.clip:g}); the adaptive simulator is the noise-free computation with the public "
                f"clipping step"
            ),
            (
                f"epsilon accounts the target client's earlier rounds and this exchange (q={q:.4g}, Opacus RDP); "
                f"epsilon_exchange is this exchange alone at q=1 (no amplification by subsampling: the attacked "
                f"batch is the target's by construction)"
            ),
            f"dp model: {self.dp_model()}",
        ]
        if sigma == 0:
            notes.append("noise_multiplier=0: no privacy guarantee (epsilon is infinite, recorded as null)")
        return notes
