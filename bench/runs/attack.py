"""The attack experiment, one straight line per target:

    dataset → client batch → defense.observe → Observation → attack.reconstruct → metrics → result row

Each arrow is one call below, in :func:`attack_target`. Rows are appended to ``results.jsonl`` as
soon as each target finishes, so an interrupted run keeps every finished target, and ``resume``
skips targets already recorded for the same run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench import provenance
from bench.attack import Attack, Reconstruction
from bench.contract import validate_observation, validate_reconstruction
from bench.data.base import Dataset, ImageDataset
from bench.defense import Defense
from bench.errors import BenchError, PluginError
from bench.federation import Federation, FLSettings
from bench.training import TrainingState, start
from bench.states import trained
from bench.metrics import Baseline, baseline_guesses, score
from bench.models.base import Model
from bench.perceptual import LpipsScorer
from bench.progress import Progress, SilentProgress
from bench.images import save_grid, save_pair_png
from bench.runs.common import prepare_components, run_id
from bench.rows import attack_row
from bench.results import RESULTS_FILE, append_rows, read_rows, writable_dir
from bench.seeding import generator
from bench.components import (
    Choice,
    create_attack,
    create_defense,
    data_and_model_components,
)
from bench.round import FEDSGD, Round
from bench.threat import LocalData, Observation
from bench.runs.annotate import attribution, caption, optimisation_notes


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines an attack run (recorded verbatim in each row's ``config``)."""

    defense: Choice
    attack: Choice
    output_dir: Path
    dataset: Choice = Choice("photos")
    model: Choice | None = None
    round: Round = FEDSGD  # the attacked client's round: FedSGD on one batch, or a local round (bench.round)
    num_targets: int = 1
    seed: int = 0
    device: str = "auto"
    data_root: Path | None = None
    lpips_weights: Path | None = None
    federation: FLSettings = field(default_factory=FLSettings)
    attack_round: int = 0
    resume: bool = False
    knowledge: str | None = None  # the attacker's knowledge level; None: the defense's default
    tuning: Mapping[str, Any] | None = None  # the tuning the attack's options came from (bench.tuning.tuned)
    state_cache: Path | None = None  # where trained states are shared between runs (not part of the config)
    offline: bool = False  # never download LPIPS weights (else BENCH_OFFLINE decides); not part of the config
    optimiser: Mapping[str, Any] | None = None  # the comparison's optimiser rule and what it set (recorded)

    @property
    def batch_size(self) -> int:
        """The attacked round's mini-batch size."""
        return self.round.batch_size


@dataclass
class Prepared:
    """The run's components, built and validated before any attack starts."""

    spec: RunSpec
    defense: Defense
    attack: Attack
    data: ImageDataset
    federation: Federation
    device: torch.device
    config: dict[str, Any]
    run_id: str
    lpips: LpipsScorer
    baseline: Baseline


def prepare(spec: RunSpec) -> Prepared:
    """Resolve and validate every choice (errors here are one-line BenchErrors), load the data."""
    if spec.num_targets < 1:
        raise BenchError(f"--num-targets must be >= 1, got {spec.num_targets}")
    if spec.attack_round < 0:
        raise BenchError(f"--attack-round must be >= 0, got {spec.attack_round}")
    spec.federation.validate()
    attack = create_attack(spec.attack)
    writable_dir(spec.output_dir)
    parts = prepare_components(
        spec.defense,
        spec.dataset,
        spec.model,
        spec.data_root,
        spec.device,
        spec.federation.local_epochs,
        knowledge=spec.knowledge,
        round_=spec.round,
    )
    defense, data, device = parts.defense, parts.data, parts.device
    federation = Federation(data, spec.federation, spec.seed, device)
    smallest = min(len(s.train) for s in federation.splits)
    if smallest < spec.round.examples:
        flag = "--batch-size" if spec.round.kind == "fedsgd" else "--local-examples"
        raise BenchError(
            f"{flag} {spec.round.examples} exceeds a client's {smallest} training examples; "
            f"use fewer examples or fewer --clients"
        )
    lpips = LpipsScorer(spec.lpips_weights, device, offline=True if spec.offline else None)
    config = _config(spec, defense, attack, parts.dataset, parts.model, parts.model_component)
    return Prepared(
        spec, defense, attack, data, federation, device, config, run_id(config), lpips, baseline_guesses(data.train_x)
    )


def _config(
    spec: RunSpec, defense: Defense, attack: Attack, dataset: Dataset, model: Choice, model_component: Model
) -> dict[str, Any]:
    return {
        "defense": {"name": spec.defense.name, **defense.config},
        "attack": {"name": spec.attack.name, **attack.config},
        "dataset": {"name": spec.dataset.name, **dataset.config},
        "model": {"name": model.name, **model_component.config},
        "run": {
            "batch_size": spec.batch_size,
            "round": spec.round.as_dict(),
            "num_targets": spec.num_targets,
            "seed": spec.seed,
            "attack_round": spec.attack_round,
            "knowledge": defense.knowledge,
            "federation": asdict(spec.federation),
            **({"optimiser": dict(spec.optimiser)} if spec.optimiser else {}),
            **({"tuning": spec.tuning["id"]} if spec.tuning else {}),
        },
    }


def resolved_config(spec: RunSpec) -> dict[str, Any]:
    """The config ``run(spec)`` records (and hashes into its ``run_id``), without loading any data.

    Sweeps use it to give each cell a stable id and to validate names and options up front.
    """
    defense, attack = create_defense(spec.defense), create_attack(spec.attack)
    defense.use_knowledge(spec.knowledge)
    defense.use_round(spec.round)
    dataset, model, model_component = data_and_model_components(spec.dataset, spec.model, defense)
    return _config(spec, defense, attack, dataset, model, model_component)


def _target_batch(p: Prepared, target: int) -> tuple[int, torch.Tensor, LocalData]:
    """The target client (round-robin over clients) and the examples of its attacked round (one batch at
    FedSGD, the round's local examples otherwise), with the round's mini-batch size."""
    clients = p.federation.settings.clients
    client = target % clients
    own = p.federation.splits[client].train
    pick = own[
        torch.randperm(len(own), generator=generator(p.spec.seed, "target", target, "batch"))[: p.spec.round.examples]
    ]
    local = p.federation.local_train(client, p.spec.batch_size)
    position = {int(i): n for n, i in enumerate(own.tolist())}
    rows = torch.tensor([position[int(i)] for i in pick], device=local.x.device)
    return client, pick, local.attacked_batch(rows)  # with the client's population (DP's sampling rate)


def _cohort(p: Prepared, state: TrainingState, target: int, client: int) -> list[tuple[dict, LocalData]]:
    """The other clients of the target's round, each with as many examples, in batches of the same size."""
    out = []
    examples = p.spec.round.examples
    for other in range(p.federation.settings.clients):
        if other == client:
            continue
        local = p.federation.local_train(other, p.spec.batch_size)
        idx = torch.randperm(len(local), generator=generator(p.spec.seed, "target", target, "cohort", other))
        idx = idx[:examples].to(local.x.device)
        out.append(
            (state.clients[other], LocalData(local.x[idx], local.y[idx], p.spec.batch_size, population=len(local)))
        )
    return out


def _valid_observation(p: Prepared, obs: object, num_images: int, target: int) -> Observation:
    """Refuse a defense that breaks the Observation contract before it produces numbers (one line)."""
    try:
        valid = validate_observation(
            obs,
            num_images,
            p.data.image_shape,
            p.data.num_classes,
            generator(p.spec.seed, "target", target, "validate"),
        )
        if valid.knowledge != p.defense.knowledge:
            raise PluginError(
                f"it was asked for knowledge level {p.defense.knowledge!r} but its Observation says {valid.knowledge!r}"
            )
        return valid
    except PluginError as exc:
        name = p.spec.defense.name
        raise PluginError(
            f"defense {name!r} breaks the Observation contract: {exc} "
            f"(`bench check-defense {name}` reports every check)"
        ) from None


def _valid_reconstruction(p: Prepared, rec: object, obs: Observation) -> Reconstruction:
    try:
        return validate_reconstruction(rec, obs)
    except PluginError as exc:
        name = p.spec.attack.name
        raise PluginError(
            f"attack {name!r} breaks the Reconstruction contract: {exc} "
            f"(`bench check-attack {name}` reports every check)"
        ) from None


@dataclass
class Case:
    """One target, observed: the target client, its batch and what the server saw."""

    target: int
    client: int
    image_ids: torch.Tensor
    batch: LocalData
    obs: Observation
    observe_seconds: float
    diagnostics: dict[str, Any] = field(default_factory=dict)  # evaluator-only (Defense.diagnostics): never attacked


def observe_target(p: Prepared, state: TrainingState, target: int) -> Case:
    """dataset → client batch → defense.observe → (validated) Observation."""
    client, image_ids, batch = _target_batch(p, target)
    began = time.perf_counter()
    obs: Observation = p.defense.observe(
        state.server,
        state.clients[client],
        batch,
        _cohort(p, state, target, client),
        generator(p.spec.seed, "target", target, "observe"),
    )
    observe_seconds = time.perf_counter() - began
    valid = _valid_observation(p, obs, len(batch), target)
    diagnostics = p.defense.diagnostics(state.server, state.clients[client], batch, valid)
    return Case(target, client, image_ids, batch, valid, observe_seconds, dict(diagnostics))


def reconstruct(p: Prepared, cases: list[Case], progress: Progress) -> tuple[list[Reconstruction], float]:
    """Observation → attack.reconstruct (one target) or reconstruct_many (several at once); seconds per target."""
    generators = [generator(p.spec.seed, "target", c.target, "attack") for c in cases]
    began = time.perf_counter()
    if len(cases) == 1:
        recs = [p.attack.reconstruct(cases[0].obs, generators[0], progress)]
    else:
        recs = list(p.attack.reconstruct_many([c.obs for c in cases], generators, progress))
        if len(recs) != len(cases):
            raise PluginError(
                f"attack {p.spec.attack.name!r} returned {len(recs)} reconstructions for "
                f"{len(cases)} targets from reconstruct_many()"
            )
    seconds = (time.perf_counter() - began) / len(cases)
    return [_valid_reconstruction(p, rec, c.obs) for rec, c in zip(recs, cases)], seconds


def score_target(
    p: Prepared,
    case: Case,
    rec: Reconstruction,
    attack_seconds: float,
    together: int,
    state_accuracy: float | None = None,
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """Reconstruction → metrics (and the no-information baseline) → the target's row. Returns the row,
    the true images and the matched reconstruction."""
    batch, obs = case.batch, case.obs
    truth = p.data.denormalise(batch.x.detach().cpu())
    recon = p.data.denormalise(rec.images.detach().cpu())
    scores = score(truth, recon, batch.y, rec.labels, p.lpips)
    matched = recon[torch.tensor(scores.assignment)]
    row = attack_row(
        run_id=p.run_id,
        target=case.target,
        status="diverged" if rec.diverged else "ok",
        defense=p.spec.defense.name,
        attack=p.spec.attack.name,
        dataset=p.spec.dataset.name,
        model=p.config["model"]["name"],
        seed=p.spec.seed,
        batch_size=p.spec.batch_size,
        round=p.spec.round.as_dict(),
        attack_round=p.spec.attack_round,
        knowledge=obs.knowledge,
        state_accuracy=state_accuracy,
        **scores.means(),
        lpips_note=scores.lpips_note,
        **p.baseline.score(truth, p.lpips),
        diverged=rec.diverged,
        attack_loss=rec.loss,
        attack_iterations=rec.iterations,
        attack_seconds=attack_seconds,
        targets_per_call=together,
        observe_seconds=case.observe_seconds,
        observed_kind=obs.public.observed_kind,
        num_reconstructed=int(rec.images.shape[0]),
        attribution=attribution(scores.assignment, len(batch), int(rec.images.shape[0])),
        target_client=case.client,
        image_ids=case.image_ids.tolist(),
        true_labels=batch.y.tolist(),
        predicted_labels=None if rec.labels is None else rec.labels[torch.tensor(scores.assignment)].tolist(),
        per_image=scores.per_image,
        defense_metrics=dict(obs.metrics),
        diagnostics=case.diagnostics,
        attack_info=rec.info,
        notes=list(obs.notes) + optimisation_notes(p.spec.attack.name, rec),
        tuning=dict(p.spec.tuning) if p.spec.tuning else None,
        config=p.config,
        **provenance.stamp(str(p.device)),
        image_file=f"images/{p.run_id}-t{case.target}.png",
    )
    return row, truth, matched


def attack_target(
    p: Prepared, state: TrainingState, target: int, progress: Progress
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """One target, start to finish. Returns its row, the true images and the matched reconstruction."""
    case = observe_target(p, state, target)
    (rec,), seconds = reconstruct(p, [case], progress)
    return score_target(p, case, rec, seconds, 1)


def trained_state(p: Prepared, log: Callable[[str], None]) -> TrainingState | None:
    """The shared training state at ``attack_round`` (None when attacking fresh networks per target)."""
    if p.spec.attack_round == 0:
        return None
    return trained(
        p.defense, p.federation, p.spec.seed, p.spec.attack_round, p.config, p.spec.state_cache, p.device, log
    )


def run(
    spec: RunSpec, progress: Progress | None = None, log: Callable[[str], None] = lambda _: None
) -> list[dict[str, Any]]:
    """Run every target of ``spec``; rows are written as they finish. Returns this run's rows.

    Targets go to the attack ``attack.targets_per_call`` at a time (one tensor for several targets
    when the attack supports it); each chunk's rows are appended as soon as it finishes.
    """
    p = prepare(spec)
    progress = progress or SilentProgress()
    out_dir = Path(spec.output_dir)
    results = out_dir / RESULTS_FILE
    done: dict[int, dict[str, Any]] = {}
    if spec.resume and results.exists():
        done = {
            r["target"]: r for r in read_rows(results)[0] if r.get("run_id") == p.run_id and r.get("kind") == "attack"
        }
    for target in sorted(done):
        log(f"target {target}: already recorded, skipped")
    pending = [t for t in range(spec.num_targets) if t not in done]
    trained = trained_state(p, log) if pending else None
    evaluated = [h["accuracy"] for h in (trained.history if trained else []) if "accuracy" in h]
    accuracy = evaluated[-1] if evaluated else None  # of the attacked state: the model the targets faced
    new: dict[int, dict[str, Any]] = {}
    pairs = []
    (out_dir / "images").mkdir(exist_ok=True)
    size = max(1, int(p.attack.targets_per_call))
    for start_at in range(0, len(pending), size):
        # untrained: a fresh network per target, as in the DLG/iDLG papers
        cases = [
            observe_target(p, trained or start(p.defense, p.federation, spec.seed, "target", t, "model"), t)
            for t in pending[start_at : start_at + size]
        ]
        recs, seconds = reconstruct(p, cases, progress)
        chunk = []
        for case, rec in zip(cases, recs):
            row, truth, matched = score_target(p, case, rec, seconds, len(cases), accuracy)
            save_pair_png(out_dir / row["image_file"], truth, matched)
            chunk.append(row)
            pairs.append((truth, matched, caption(row)))
            log(caption(row))
        append_rows(results, chunk)
        new.update((r["target"], r) for r in chunk)
    if pairs:
        save_grid(
            out_dir / "reconstructions.png",
            [(t, r) for t, r, _ in pairs],
            [c for _, _, c in pairs],
            title=f"{spec.attack.name} against {spec.defense.name} on {spec.dataset.name} "
            f"(top: ground truth, bottom: reconstruction)",
        )
    return [done.get(t) or new[t] for t in range(spec.num_targets)]
