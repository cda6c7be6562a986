"""HE — homomorphic encryption (CKKS): the server adds ciphertexts and only the aggregate is decrypted.

Each client runs plain local SGD (FedSGD gradient or FedAvg update, exactly as ``fedavg``), scales
its flattened upload by its number of examples n_k and encrypts it under CKKS; the server adds the
ciphertexts and the decrypted sum Σ n_k u_k, divided by the public Σ n_k, is the FedAvg mean: the
server sees only the aggregate over a round's clients, plus CKKS' approximation error. In the attack
setting the aggregate covers K clients (``clients``: the target and K−1 others of its round, same
batch size B); the attacker must reconstruct all K×B images from the mean of K uploads, and the
target's images are scored by their best match among them. Training aggregates every client.

Roles (the threat model, enforced by which object holds which key):

* the **key holder** generates the CKKS key pair and is the only role with the secret key. It hands
  out a *public* context (parameters and public key, no secret key) and decrypts the aggregate it is
  given. In a deployment this is the clients jointly (threshold or multi-key CKKS, so no single party
  can decrypt one upload) or a third party that does not collude with the server; bench models either
  as one object that the server never receives, and uses the same key for every round.
* each **client** encrypts its upload under the public context;
* the **server** (aggregator) holds the public context only: it can add ciphertexts but not decrypt
  them (with TenSEAL, decrypting under its context raises). It hands the encrypted sum to the key
  holder and receives the decrypted aggregate — the protocol's output, which the server sees in the
  clear and attacks.

With K = 1 the decrypted aggregate *is* the target's own upload: HE then protects only against
outsiders. Whoever holds the secret key, the protocol's output reaches the server in the clear.

Backends (``tenseal``; ``simulated``, default) and the noise model: :mod:`bench.defenses.he.ckks`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from bench.defense import ClientState, FLTask, ServerState
from bench.errors import BenchError
from bench.options import Option
from bench.round import Round
from bench.sgd_defense import (
    SGD_OPTIONS,
    SGDDefense,
    apply_uploads,
    client_round,
    sgd_public_knowledge,
    sgd_simulator,
)
from bench.defenses.he.ckks import (
    BACKENDS,
    BUFFER_PREFIX,
    CKKSParams,
    CKKSRoles,
    MEASURED,
    MODELLED,
    SEAL_MAX_COEFF_BITS,
    SimulatedAggregator,
    SimulatedEncryptor,
    SimulatedKeyHolder,
    TenSEALAggregator,
    TenSEALEncryptor,
    TenSEALKeyHolder,
    check_backend,
    flatten,
    fresh_generator,
    make_roles,
    modelled_rates,
    parse_coeff_bits,
    unflatten,
)
from bench.threat import LocalData, Observation, Simulator, Tensors, Upload


REKEY_SEED = 0  # the key pair of a restored federation that has none in this process (keys only set CKKS' noise)


class HE(SGDDefense):
    """Homomorphic encryption (CKKS): the server only decrypts the aggregate of K clients' uploads."""

    name = "he"
    description = __doc__
    #: adaptive: the attacker simulates the mean over K candidate batches; unaware: it takes the decrypted
    #: mean for one client's upload and reconstructs B images from it.
    knowledge_levels = ("adaptive", "unaware")
    #: ``--defense A+he`` (bench.compose): every member runs FedAvg-family defense A's client step (e.g. DP-SGD)
    #: before encrypting; None: the plain SGD client.
    wraps_client = True
    inner: SGDDefense | None = None
    options = (
        *SGD_OPTIONS,
        Option(
            "clients",
            int,
            2,
            "K: clients whose encrypted uploads are summed before the server decrypts, "
            "in the attack setting (training: all participating clients); 1 = no protection",
            min=1,
        ),
        Option(
            "backend",
            str,
            "simulated",
            "tenseal: real CKKS (optional TenSEAL); simulated: CKKS' error model and sizes, no cryptography",
            choices=BACKENDS,
        ),
        Option(
            "poly_modulus",
            int,
            8192,
            "CKKS polynomial degree N (N/2 values per ciphertext)",
            choices=tuple(SEAL_MAX_COEFF_BITS),
        ),
        Option("coeff_bits", str, "60,40,40,60", "CKKS coefficient-modulus prime sizes in bits (last: special prime)"),
        Option("scale_bits", int, 40, "CKKS scale 2^bits (precision of the encoded values)", min=1),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.ckks = CKKSParams(self.opt.poly_modulus, parse_coeff_bits(self.opt.coeff_bits), self.opt.scale_bits)
        self.ckks.validate()
        check_backend(self.opt.backend)
        self.rates = modelled_rates(self.ckks)
        self.roles: CKKSRoles | None = None
        self._server_metrics: dict[str, Any] = {}

    def init_server(self) -> ServerState:
        """The global model, and the federation's CKKS roles: a fresh key pair made by the key holder,
        whose public context the clients and the server receive (drawn after the model)."""
        server = super().init_server()
        self.roles = make_roles(self.opt.backend, self.ckks, fresh_generator())
        return server

    @property
    def key_holder(self) -> SimulatedKeyHolder | TenSEALKeyHolder:
        return self._roles().key_holder

    @property
    def encryptor(self) -> SimulatedEncryptor | TenSEALEncryptor:
        return self._roles().encryptor

    @property
    def aggregator(self) -> SimulatedAggregator | TenSEALAggregator:
        """The server's side: the public context only (it cannot decrypt)."""
        return self._roles().aggregator

    def _roles(self) -> CKKSRoles:
        if self.roles is None:  # a federation restored from a kept state (bench.states): the key holder re-keys
            self.roles = make_roles(self.opt.backend, self.ckks, torch.Generator().manual_seed(REKEY_SEED))
        return self.roles

    def seconds_source(self) -> str:
        return MEASURED if self._roles().measured else MODELLED

    # --- what travels ------------------------------------------------------------------------------
    def encrypt_upload(
        self, payload: Tensors, float_buffers: Tensors, num_examples: int, generator: torch.Generator | None
    ) -> tuple[Tensors, dict[str, Any]]:
        """n_k × (payload, floating buffers), flattened and encrypted; with its cost metrics."""
        vector = num_examples * flatten({**payload, **{BUFFER_PREFIX + k: v for k, v in float_buffers.items()}})
        began = time.perf_counter()
        message = self.encryptor.encrypt(vector, generator)
        seconds = time.perf_counter() - began
        plain = 4 * vector.numel()  # float32 plaintext
        wire = self.encryptor.wire_bytes(message)
        ciphertexts = self.ckks.ciphertexts(vector.numel())
        return message, {
            "bytes_uploaded": wire,
            "plaintext_bytes": plain,
            "expansion_factor": wire / plain,
            "ciphertexts_per_client": ciphertexts,
            "he_seconds_source": self.seconds_source(),
            "encrypt_seconds": seconds if self.encryptor.measured else ciphertexts * self.rates.encrypt,
        }

    def decrypt_mean(
        self, messages: Sequence[Tensors], length: int, total_examples: int
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """The round's server side: the aggregator adds the ciphertexts under its public context, the key
        holder decrypts the sum, and the server divides the decrypted sum by the public Σ n_k."""
        began = time.perf_counter()
        aggregate = self.aggregator.add(messages)
        added = time.perf_counter()
        vector = self.key_holder.decrypt(aggregate, length)
        done = time.perf_counter()
        if self.key_holder.measured:
            costs = {"aggregate_seconds": added - began, "decrypt_seconds": done - added}
        else:
            ciphertexts = self.ckks.ciphertexts(length)
            costs = {
                "aggregate_seconds": len(messages) * ciphertexts * self.rates.add,
                "decrypt_seconds": ciphertexts * self.rates.decrypt,
            }
        return vector / total_examples, {**costs, "he_seconds_source": self.seconds_source()}

    # --- a member's client step: plain SGD, or the wrapped defense's ---------------------------------
    def setup(self, task: FLTask) -> None:
        super().setup(task)
        if self.inner is not None:
            self.inner.setup(task)

    def init_client(self, client_id: int) -> ClientState:
        return self.inner.init_client(client_id) if self.inner is not None else {}

    def use_round(self, round_: Round) -> Round:
        """The attacked round, for the key holder's members and for the wrapped defense's client step."""
        if self.inner is not None:
            self.inner.use_round(round_)
        return super().use_round(round_)

    def member_step(
        self,
        server: ServerState,
        client: ClientState,
        data: LocalData,
        generator: torch.Generator | None,
        attack_setting: bool = False,
    ) -> Upload:
        """What one member sends before encryption: the plain SGD client's upload, or the wrapped defense's
        (in the attack setting: eval mode, fixed batch order, on a copy of the client's state)."""
        if self.inner is None:
            protocol = self.protocol.for_round(self.round) if attack_setting else self.protocol
            return client_round(self.model, server, data, protocol, generator, attack_setting=attack_setting)
        self.inner._attack_setting = attack_setting
        try:
            state = {k: v.clone() for k, v in client.items()} if attack_setting else client
            return self.inner.client_update(server, state, data, generator)
        finally:
            self.inner._attack_setting = False

    def member_simulator(self, server: ServerState, target: LocalData) -> Simulator:
        """The attacker's replay of one member: plain SGD, or the wrapped defense's public steps (its step
        gradient's noise-free part and its ``replay`` without the member's own upload, which the server
        never sees under encryption)."""
        protocol = self.protocol.for_round(self.round)
        n = len(target)
        if self.inner is None or self.knowledge == "unaware":
            return sgd_simulator(self.model, server, target.batch_size, protocol, examples=n)
        inner = self.inner
        gradient = inner.replay_gradient(target)
        clean = sgd_simulator(self.model, server, target.batch_size, protocol, gradient=gradient, examples=n)
        return lambda x, y, unknowns: inner.replay(clean(x, y, unknowns), None)

    # --- training ----------------------------------------------------------------------------------
    def client_update(
        self, server: ServerState, client: ClientState, data: LocalData, generator: torch.Generator | None
    ) -> Upload:
        began = time.perf_counter()
        upload = self.member_step(server, client, data, generator)
        floats = {k: v for k, v in upload.buffers.items() if v.is_floating_point()}
        message, costs = self.encrypt_upload(upload.payload, floats, upload.num_examples, generator)
        integers = {k: v for k, v in upload.buffers.items() if not v.is_floating_point()}
        return Upload(
            payload=message,
            num_examples=upload.num_examples,
            kind=upload.kind,
            buffers=integers,
            metrics={
                **upload.metrics,
                **costs,
                "backend": self.opt.backend,
                "client_seconds": time.perf_counter() - began,
            },
        )

    def aggregate(self, server: ServerState, uploads: Sequence[Upload]) -> ServerState:
        like = self.plaintext_layout(server)
        mean, costs = self.decrypt_mean(
            [u.payload for u in uploads], sum(t.numel() for t in like.values()), sum(u.num_examples for u in uploads)
        )
        modelled = (
            0.0
            if self.key_holder.measured
            else (
                sum(u.metrics["encrypt_seconds"] for u in uploads)
                + costs["aggregate_seconds"]
                + costs["decrypt_seconds"]
            )
        )
        self._server_metrics = {**costs, "modelled_seconds": modelled}
        values = unflatten(mean, like)
        payload = {k: v for k, v in values.items() if not k.startswith(BUFFER_PREFIX)}
        buffers = {k[len(BUFFER_PREFIX) :]: v for k, v in values.items() if k.startswith(BUFFER_PREFIX)}
        for k in uploads[0].buffers:  # integer buffers (step counters) travel in the clear: the maximum
            buffers[k] = torch.stack([u.buffers[k] for u in uploads]).max(0).values
        return apply_uploads(server, [Upload(payload, 1, uploads[0].kind, buffers)], self.protocol.lr)

    def server_metrics(self) -> dict[str, Any]:
        """The last round's aggregation and decryption seconds, and ``modelled_seconds``: the HE time the
        round's measured wall time does not contain (simulated backend: every client's encryption, the
        aggregation and the decryption, modelled; TenSEAL: 0, all of it was measured inside the round)."""
        return dict(self._server_metrics)

    def plaintext_layout(self, server: ServerState) -> Tensors:
        """Names and shapes of what a client encrypts (public: the architecture): parameters, then floating buffers."""
        params = {k: server[k] for k, _ in self.model.named_parameters()}
        floats = {BUFFER_PREFIX + k: server[k] for k, _ in self.model.named_buffers() if server[k].is_floating_point()}
        return {**params, **floats}

    # --- the attack setting ------------------------------------------------------------------------
    def aggregate_simulator(self, server: ServerState, target: LocalData) -> Simulator:
        """Mean over K candidate members' rounds: ``x`` holds K×N images (member k's N examples being rows
        kN..(k+1)N), or ``passes`` copies of them (pass-major, :class:`bench.threat.Observation`)."""
        examples = len(target)
        one = self.member_simulator(server, target)
        k_clients = self.opt.clients
        passes = self.protocol.for_round(self.round).passes

        def simulate(x: torch.Tensor, y: torch.Tensor, unknowns: Mapping[str, torch.Tensor]) -> Tensors:
            images = k_clients * examples
            copies = x.shape[0] // images
            if x.shape[0] != images * copies or copies not in (1, passes):
                raise ValueError(
                    f"he simulate() takes the K×N = {images} images of all {k_clients} aggregated clients "
                    f"(or {passes} copies of them), got {x.shape[0]}"
                )

            def member(t: torch.Tensor, k: int) -> torch.Tensor:  # member k's rows of every copy, pass-major
                return t.reshape(copies, k_clients, examples, *t.shape[1:])[:, k].reshape(-1, *t.shape[1:])

            parts = [one(member(x, k), member(y, k), unknowns) for k in range(k_clients)]
            return {key: sum(p[key] for p in parts) / k_clients for key in parts[0]}

        return simulate

    def observe(
        self,
        server: ServerState,
        client: ClientState,
        target: LocalData,
        cohort: Sequence[tuple[ClientState, LocalData]],
        generator: torch.Generator | None,
    ) -> Observation:
        k_clients = self.opt.clients
        if len(cohort) < k_clients - 1:
            raise BenchError(
                f"defense 'he' clients={k_clients} needs {k_clients - 1} other clients in the round, "
                f"the federation has {len(cohort) + 1} clients (raise --clients or lower clients)"
            )
        members = [target] + [data for _, data in cohort[: k_clients - 1]]
        states = [client] + [state for state, _ in cohort[: k_clients - 1]]
        if any(len(m) != len(target) for m in members):
            raise BenchError("defense 'he' needs the aggregated clients' batches to have the target's size")
        sent = [self.member_step(server, s, m, generator, attack_setting=True) for s, m in zip(states, members)]
        uploads = [(u.payload, u.kind) for u in sent]
        kind = uploads[0][1]
        like = {k: v.detach() for k, v in uploads[0][0].items()}
        messages, costs = [], []
        for (payload, _), m in zip(uploads, members):
            message, cost = self.encrypt_upload(payload, {}, len(m), generator)
            messages.append(message)
            costs.append(cost)
        length = sum(t.numel() for t in like.values())
        total = sum(len(m) for m in members)
        mean, server_costs = self.decrypt_mean(messages, length, total)
        observed = unflatten(mean, like)
        exact = torch.stack([len(m) * flatten(p) for (p, _), m in zip(uploads, members)]).sum(0) / total
        member_metrics = {k: v for k, v in sent[0].metrics.items() if k not in ("bytes_uploaded", "client_seconds")}
        metrics = {
            **member_metrics,
            **costs[0],
            "encrypt_seconds": sum(c["encrypt_seconds"] for c in costs) / len(costs),
            **server_costs,
            "backend": self.opt.backend,
            "aggregated_clients": k_clients,
            "ckks_max_abs_error": float((mean - exact).abs().max()),
            "ckks_error_std_model": self.ckks.error_std(k_clients) / total,  # CKKS error is absolute: the sum / Σn
            "observed_rms": float(exact.pow(2).mean().sqrt()),
            "keygen_seconds": self.key_holder.keygen_seconds,
        }
        if k_clients == 1:
            notes = [
                "he with clients=1: the decrypted aggregate is the target's own upload, so HE gives no "
                "protection against a server that can decrypt"
            ]
        else:
            notes = [
                f"he: the server decrypts only the example-weighted mean of {k_clients} clients' uploads "
                f"(target + {k_clients - 1} of its round); the attack reconstructs all {k_clients * len(target)} "
                f"images and the target's are scored by best match"
            ]
        if not self.key_holder.measured:
            notes.append(
                "he backend=simulated: no encryption was run; bytes are computed from the CKKS parameters "
                "and encrypt/aggregate/decrypt/keygen seconds are modelled from TenSEAL's measured rates"
            )
        public = sgd_public_knowledge(
            self.model,
            server,
            self.task,
            target,
            self.protocol.for_round(self.round),
            kind,
            round=self.round.as_dict(),
            passes=self.protocol.for_round(self.round).passes,
            he_clients=k_clients,
            ckks=self.ckks.as_dict(),
        )
        if self.knowledge == "unaware":
            notes.append(
                "knowledge 'unaware': the attacker takes the decrypted mean for the target's own upload and "
                f"reconstructs {len(target)} image(s) from it"
            )
            return Observation(
                observed=observed,
                public=public,
                simulate=self.member_simulator(server, target),
                knowledge=self.knowledge,
                notes=tuple(notes),
                metrics=metrics,
                exact=k_clients == 1,
                passes=public.protocol["passes"],
            )
        # exact only at K = 1: for K > 1 simulate needs all K clients' inputs (then it is, to CKKS precision)
        return Observation(
            observed=observed,
            public=dataclasses.replace(public, num_images=k_clients * len(target)),
            simulate=self.aggregate_simulator(server, target),
            knowledge=self.knowledge,
            notes=tuple(notes),
            metrics=metrics,
            exact=k_clients == 1,
            passes=public.protocol["passes"],
        )
