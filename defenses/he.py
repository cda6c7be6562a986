"""HE — homomorphic encryption (CKKS): the server adds ciphertexts and only the aggregate is decrypted.

Each client runs plain local SGD (FedSGD gradient or FedAvg update, exactly as ``fedavg``), scales
its flattened upload by its number of examples n_k and encrypts it under CKKS; the server adds the
ciphertexts and the decrypted sum Σ n_k u_k, divided by the public Σ n_k, is the FedAvg mean. So
the honest-but-curious server never sees one client's upload, only the aggregate over the clients
of a round, plus CKKS' approximation error. In the attack setting the aggregate covers K clients
(``clients``: the target and K−1 others of its round, same batch size B); the attacker must
reconstruct all K×B images from the mean of K uploads, and the target's images are scored by their
best match among the reconstructions. In training the aggregate covers every participating client.

With K = 1 the decrypted aggregate *is* the target's own upload: HE then gives no protection
against a server that can decrypt (it protects only against outsiders). Whoever holds the secret
key, the protocol's output — the aggregate — reaches the server in the clear.

Backends (``backend``):
* ``tenseal``: real CKKS with TenSEAL (optional dependency, ``pip install 'bench-fl[he]'``). Each
  client's vector is packed N/2 values per ciphertext, encrypted and serialised; the server
  deserialises, adds and decrypts. Bytes are the serialised sizes, seconds are measured. TenSEAL's
  key generation and encryption randomness cannot be seeded: runs agree to CKKS precision, not bits.
* ``simulated`` (default, no TenSEAL): the same aggregate plus the approximation error CKKS makes,
  drawn from its noise model (below); ciphertext sizes are computed from the parameters as SEAL's
  uncompressed size, 2 polynomials × N coefficients × L data primes × 8 bytes per ciphertext (an
  upper bound: TenSEAL's zstd-compressed serialisation is about 16 % smaller). Nothing is encrypted,
  so its encrypt/aggregate/decrypt seconds are null.

Noise model (SEAL's CKKS, fresh public-key ciphertexts, additions only): encoding rounds Δ·m to
integers; encryption ends with a modulus switch that drops the special prime and leaves rounding
errors r₀ + r₁·s (r uniform in ±½, s the ternary secret key). Decoding evaluates the error polynomial
at the slot's root ζⱼ — a ring homomorphism — so slot j's error is Re(a + r₁(ζⱼ)·s(ζⱼ)) / Δ with a
the encoding and r₀ terms: Gaussian given the key, with a variance that depends on |s(ζⱼ)|, hence
heavy-tailed over slots (excess kurtosis ≈ 3). Its std is √(N/12 + N²/36) / Δ per ciphertext and √K
times that for a sum of K: 1.24e-9 for N = 8192, Δ = 2^40 (TenSEAL measured 1.24e-9, kurtosis 2.8-3.1).
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from bench.defense import ClientState, ServerState
from bench.errors import BenchError
from bench.options import Option
from bench.sgd_client import (SGD_OPTIONS, SGDDefense, apply_uploads, client_round, observe_sgd_client,
                              sgd_public_knowledge, sgd_simulator)
from bench.threat import LocalData, Observation, Simulator, Tensors, Upload

BACKENDS = ("simulated", "tenseal")
#: SEAL's largest total coefficient-modulus size (bits) for 128-bit security, by polynomial degree.
SEAL_MAX_COEFF_BITS = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
BUFFER_PREFIX = "buffer:"


@dataclass(frozen=True)
class CKKSParams:
    """CKKS parameters: polynomial degree N, coefficient-modulus prime sizes (last = special prime), scale 2^bits."""

    poly_modulus: int = 8192
    coeff_bits: tuple[int, ...] = (60, 40, 40, 60)
    scale_bits: int = 40

    def validate(self) -> None:
        where = "defense 'he'"
        if self.poly_modulus not in SEAL_MAX_COEFF_BITS:
            raise BenchError(f"{where} option 'poly_modulus' must be one of {sorted(SEAL_MAX_COEFF_BITS)}, "
                             f"got {self.poly_modulus}")
        if len(self.coeff_bits) < 2 or not all(20 <= b <= 60 for b in self.coeff_bits):
            raise BenchError(f"{where} option 'coeff_bits' needs at least 2 prime sizes, each 20..60 bits, "
                             f"got {','.join(map(str, self.coeff_bits))}")
        if sum(self.coeff_bits) > SEAL_MAX_COEFF_BITS[self.poly_modulus]:
            raise BenchError(f"{where}: coeff_bits sum to {sum(self.coeff_bits)} bits, more than the "
                             f"{SEAL_MAX_COEFF_BITS[self.poly_modulus]} that N={self.poly_modulus} allows "
                             f"(128-bit security)")
        if not 1 <= self.scale_bits < sum(self.coeff_bits[:-1]) - 1:
            raise BenchError(f"{where} option 'scale_bits' must be in 1..{sum(self.coeff_bits[:-1]) - 2} "
                             f"(below the data modulus), got {self.scale_bits}")

    @property
    def slots(self) -> int:
        return self.poly_modulus // 2

    def ciphertexts(self, values: int) -> int:
        return -(-values // self.slots)

    def ciphertext_bytes(self) -> int:
        """SEAL's uncompressed size of one fresh ciphertext: 2 polynomials × N × L data primes × 8 bytes."""
        return 2 * self.poly_modulus * (len(self.coeff_bits) - 1) * 8

    def error_std(self, ciphertexts_added: int = 1) -> float:
        """Std of the error in each decrypted value of a sum of fresh ciphertexts (module docstring)."""
        n = self.poly_modulus
        return math.sqrt(ciphertexts_added * n * (2 + 2 * n / 3) / 24) / 2.0 ** self.scale_bits

    def as_dict(self) -> dict[str, Any]:
        return {"poly_modulus": self.poly_modulus, "coeff_bits": list(self.coeff_bits), "scale_bits": self.scale_bits}


class SimulatedCKKS:
    """CKKS without cryptography: the plaintext travels as a stand-in for the ciphertext, with the
    error CKKS encryption would add drawn from its noise model; sizes come from the parameters.

    The error of slot j is Re(a + b·s(ζⱼ)) / Δ, where a and b are the per-encryption rounding terms
    evaluated at the slot's root (complex Gaussian, variance N/6 and N/12) and s(ζⱼ) is the secret
    key evaluated there (complex Gaussian, variance 2N/3), fixed for the key. So slots differ in
    error size and the errors are heavy-tailed (a Gaussian scale mixture), as measured with TenSEAL.
    """

    measured = False

    def __init__(self, params: CKKSParams) -> None:
        self.params = params
        self.key: torch.Tensor | None = None  # s(ζⱼ) for each slot j: [slots, 2] (real, imaginary)

    def keygen(self, generator: torch.Generator) -> None:
        n = self.params.poly_modulus
        self.key = math.sqrt(n / 3) * torch.randn(self.params.slots, 2, generator=generator, dtype=torch.float64)

    def encrypt(self, vector: torch.Tensor, generator: torch.Generator | None) -> Tensors:
        if self.key is None:
            raise RuntimeError("SimulatedCKKS.keygen must run before encrypt")
        n = self.params.poly_modulus
        values = vector.detach().double().cpu()
        key = self.key[torch.arange(values.numel()) % self.params.slots]
        draw = torch.randn(values.numel(), 3, generator=generator, dtype=torch.float64)
        a_re = math.sqrt(n / 12) * draw[:, 0]
        b_re, b_im = math.sqrt(n / 24) * draw[:, 1], math.sqrt(n / 24) * draw[:, 2]
        error = a_re + b_re * key[:, 0] - b_im * key[:, 1]
        return {"ckks_slots": values + error / 2.0 ** self.params.scale_bits}

    def wire_bytes(self, message: Tensors) -> int:
        return self.params.ciphertexts(message["ckks_slots"].numel()) * self.params.ciphertext_bytes()

    def add(self, messages: Sequence[Tensors]) -> torch.Tensor:
        return torch.stack([m["ckks_slots"] for m in messages]).sum(0)

    def decrypt(self, aggregate: torch.Tensor, length: int) -> torch.Tensor:
        return aggregate[:length]


class TenSEALCKKS:
    """Real CKKS with TenSEAL: one context (and secret key) shared by the clients; vectors are packed
    N/2 values per ciphertext and serialised, which is what travels and what is counted."""

    measured = True

    def __init__(self, params: CKKSParams) -> None:
        import tenseal as ts

        self.ts = ts
        self.params = params
        self.context: Any = None
        self.keygen_seconds: float | None = None

    def keygen(self, generator: torch.Generator) -> None:
        """A fresh context and key pair (TenSEAL's randomness cannot be seeded: ``generator`` is unused)."""
        began = time.perf_counter()
        try:
            self.context = self.ts.context(self.ts.SCHEME_TYPE.CKKS, poly_modulus_degree=self.params.poly_modulus,
                                           coeff_mod_bit_sizes=list(self.params.coeff_bits))
        except ValueError as exc:
            raise BenchError(f"defense 'he': TenSEAL rejects the CKKS parameters {self.params.as_dict()}: {exc}") from None
        self.context.global_scale = 2.0 ** self.params.scale_bits
        self.keygen_seconds = time.perf_counter() - began

    def encrypt(self, vector: torch.Tensor, generator: torch.Generator | None) -> Tensors:
        if self.context is None:
            raise RuntimeError("TenSEALCKKS.keygen must run before encrypt")
        values = vector.detach().double().cpu()
        message = {}
        for i, start in enumerate(range(0, values.numel(), self.params.slots)):
            chunk = values[start:start + self.params.slots].tolist()
            data = self.ts.ckks_vector(self.context, chunk).serialize()
            message[f"ct{i}"] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return message

    def wire_bytes(self, message: Tensors) -> int:
        return int(sum(t.numel() for t in message.values()))

    def add(self, messages: Sequence[Tensors]) -> list[Any]:
        total = []
        for key in messages[0]:
            vectors = [self.ts.ckks_vector_from(self.context, m[key].numpy().tobytes()) for m in messages]
            acc = vectors[0]
            for v in vectors[1:]:
                acc = acc + v
            total.append(acc)
        return total

    def decrypt(self, aggregate: list[Any], length: int) -> torch.Tensor:
        values = [x for ciphertext in aggregate for x in ciphertext.decrypt()]
        return torch.tensor(values[:length], dtype=torch.float64)


def make_backend(name: str, params: CKKSParams) -> SimulatedCKKS | TenSEALCKKS:
    if name == "tenseal":
        try:
            import tenseal  # noqa: F401
        except ImportError:
            raise BenchError("defense 'he' backend=tenseal needs TenSEAL: pip install 'bench-fl[he]' "
                             "(or use backend=simulated)") from None
        return TenSEALCKKS(params)
    return SimulatedCKKS(params)


def fresh_generator() -> torch.Generator:
    """A generator seeded from torch's global RNG (which the harness seeds before ``init_server``)."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))


def flatten(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).double().cpu() for t in tensors.values()])


def unflatten(vector: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Tensors:
    out, start = {}, 0
    for k, t in like.items():
        out[k] = vector[start:start + t.numel()].reshape(t.shape).to(dtype=t.dtype, device=t.device)
        start += t.numel()
    return out


def parse_coeff_bits(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise BenchError(f"defense 'he' option 'coeff_bits' expects comma-separated integers such as "
                         f"60,40,40,60, got {text!r}") from None


class HE(SGDDefense):
    """Homomorphic encryption (CKKS): the server only decrypts the aggregate of K clients' uploads."""

    name = "he"
    description = __doc__
    #: adaptive: the attacker simulates the mean over K candidate batches; unaware: it takes the decrypted
    #: mean for one client's upload and reconstructs B images from it.
    knowledge_levels = ("adaptive", "unaware")
    options = (
        *SGD_OPTIONS,
        Option("clients", int, 2, "K: clients whose encrypted uploads are summed before the server decrypts, "
               "in the attack setting (training: all participating clients); 1 = no protection", min=1),
        Option("backend", str, "simulated", "tenseal: real CKKS (optional TenSEAL); simulated: CKKS' error "
               "model and sizes, no cryptography", choices=BACKENDS),
        Option("poly_modulus", int, 8192, "CKKS polynomial degree N (N/2 values per ciphertext)",
               choices=tuple(SEAL_MAX_COEFF_BITS)),
        Option("coeff_bits", str, "60,40,40,60", "CKKS coefficient-modulus prime sizes in bits (last: special prime)"),
        Option("scale_bits", int, 40, "CKKS scale 2^bits (precision of the encoded values)", min=1),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.ckks = CKKSParams(self.opt.poly_modulus, parse_coeff_bits(self.opt.coeff_bits), self.opt.scale_bits)
        self.ckks.validate()
        self.backend = make_backend(self.opt.backend, self.ckks)
        self._server_metrics: dict[str, Any] = {}

    def init_server(self) -> ServerState:
        """The global model, and a fresh CKKS key pair for this federation (drawn after the model)."""
        server = super().init_server()
        self.backend.keygen(fresh_generator())
        return server

    # --- what travels ------------------------------------------------------------------------------
    def encrypt_upload(self, payload: Tensors, float_buffers: Tensors, num_examples: int,
                       generator: torch.Generator | None) -> tuple[Tensors, dict[str, Any]]:
        """n_k × (payload, floating buffers), flattened and encrypted; with its cost metrics."""
        vector = num_examples * flatten({**payload, **{BUFFER_PREFIX + k: v for k, v in float_buffers.items()}})
        began = time.perf_counter()
        message = self.backend.encrypt(vector, generator)
        seconds = time.perf_counter() - began
        plain = 4 * vector.numel()  # float32 plaintext
        wire = self.backend.wire_bytes(message)
        return message, {"bytes_uploaded": wire, "plaintext_bytes": plain, "expansion_factor": wire / plain,
                         "ciphertexts_per_client": self.ckks.ciphertexts(vector.numel()),
                         "encrypt_seconds": seconds if self.backend.measured else None}

    def decrypt_mean(self, messages: Sequence[Tensors], length: int, total_examples: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """The server's step: add the ciphertexts, decrypt the sum, divide by the public Σ n_k."""
        began = time.perf_counter()
        aggregate = self.backend.add(messages)
        added = time.perf_counter()
        vector = self.backend.decrypt(aggregate, length)
        done = time.perf_counter()
        measured = self.backend.measured
        return vector / total_examples, {"aggregate_seconds": added - began if measured else None,
                                         "decrypt_seconds": done - added if measured else None}

    # --- training ----------------------------------------------------------------------------------
    def client_update(self, server: ServerState, client: ClientState, data: LocalData,
                      generator: torch.Generator | None) -> Upload:
        upload = client_round(self.model, server, data, self.protocol, generator)
        floats = {k: v for k, v in upload.buffers.items() if v.is_floating_point()}
        message, costs = self.encrypt_upload(upload.payload, floats, upload.num_examples, generator)
        integers = {k: v for k, v in upload.buffers.items() if not v.is_floating_point()}
        return Upload(payload=message, num_examples=upload.num_examples, kind=upload.kind, buffers=integers,
                      metrics={**upload.metrics, **costs, "backend": self.opt.backend})

    def aggregate(self, server: ServerState, uploads: Sequence[Upload]) -> ServerState:
        like = self.plaintext_layout(server)
        mean, self._server_metrics = self.decrypt_mean([u.payload for u in uploads], sum(t.numel() for t in like.values()),
                                                       sum(u.num_examples for u in uploads))
        values = unflatten(mean, like)
        payload = {k: v for k, v in values.items() if not k.startswith(BUFFER_PREFIX)}
        buffers = {k[len(BUFFER_PREFIX):]: v for k, v in values.items() if k.startswith(BUFFER_PREFIX)}
        for k in uploads[0].buffers:  # integer buffers (step counters) travel in the clear: the maximum
            buffers[k] = torch.stack([u.buffers[k] for u in uploads]).max(0).values
        return apply_uploads(server, [Upload(payload, 1, uploads[0].kind, buffers)], self.protocol.lr)

    def server_metrics(self) -> dict[str, Any]:
        return dict(self._server_metrics)

    def plaintext_layout(self, server: ServerState) -> Tensors:
        """Names and shapes of what a client encrypts (public: the architecture): parameters, then floating buffers."""
        params = {k: server[k] for k, _ in self.model.named_parameters()}
        floats = {BUFFER_PREFIX + k: server[k] for k, _ in self.model.named_buffers() if server[k].is_floating_point()}
        return {**params, **floats}

    # --- the attack setting ------------------------------------------------------------------------
    def aggregate_simulator(self, server: ServerState, batch_size: int) -> Simulator:
        """Mean over K candidate batches (x holds K×B images, client k's batch being rows kB..(k+1)B)."""
        one = sgd_simulator(self.model, server, batch_size, self.protocol)
        k_clients = self.opt.clients

        def simulate(x: torch.Tensor, y: torch.Tensor, unknowns: Mapping[str, torch.Tensor]) -> Tensors:
            if x.shape[0] != k_clients * batch_size:
                raise ValueError(f"he simulate() takes the K×B = {k_clients * batch_size} images of all "
                                 f"{k_clients} aggregated clients, got {x.shape[0]}")
            parts = [one(x[k * batch_size:(k + 1) * batch_size], y[k * batch_size:(k + 1) * batch_size], unknowns)
                     for k in range(k_clients)]
            return {key: sum(p[key] for p in parts) / k_clients for key in parts[0]}

        return simulate

    def observe(self, server: ServerState, client: ClientState, target: LocalData,
                cohort: Sequence[tuple[ClientState, LocalData]], generator: torch.Generator | None) -> Observation:
        k_clients = self.opt.clients
        if len(cohort) < k_clients - 1:
            raise BenchError(f"defense 'he' clients={k_clients} needs {k_clients - 1} other clients in the round, "
                             f"the federation has {len(cohort) + 1} clients (raise --clients or lower clients)")
        members = [target] + [data for _, data in cohort[:k_clients - 1]]
        if any(len(m) != len(target) for m in members):
            raise BenchError("defense 'he' needs the aggregated clients' batches to have the target's size")
        uploads = [observe_sgd_client(self.model, server, m, self.protocol) for m in members]
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
        exact = sum(len(m) * flatten(p) for (p, _), m in zip(uploads, members)) / total
        metrics = {
            **costs[0], "encrypt_seconds": None if costs[0]["encrypt_seconds"] is None
            else sum(c["encrypt_seconds"] for c in costs) / len(costs),
            **server_costs, "backend": self.opt.backend, "aggregated_clients": k_clients,
            "ckks_max_abs_error": float((mean - exact).abs().max()),
            "ckks_error_std_model": self.ckks.error_std(k_clients) / total,  # CKKS error is absolute: the sum / Σn
            "observed_rms": float(exact.pow(2).mean().sqrt()),
            "keygen_seconds": getattr(self.backend, "keygen_seconds", None),
        }
        if k_clients == 1:
            notes = ["he with clients=1: the decrypted aggregate is the target's own upload, so HE gives no "
                     "protection against a server that can decrypt"]
        else:
            notes = [f"he: the server decrypts only the example-weighted mean of {k_clients} clients' uploads "
                     f"(target + {k_clients - 1} of its round); the attack reconstructs all {k_clients * len(target)} "
                     f"images and the target's are scored by best match"]
        if not self.backend.measured:
            notes.append("he backend=simulated: no encryption was run; bytes are computed from the CKKS parameters "
                         "and encrypt/aggregate/decrypt seconds are null")
        public = sgd_public_knowledge(self.model, server, self.task, target, self.protocol, kind, he_clients=k_clients,
                                      ckks=self.ckks.as_dict())
        if self.knowledge == "unaware":
            notes.append("knowledge 'unaware': the attacker takes the decrypted mean for the target's own upload and "
                         f"reconstructs {len(target)} image(s) from it")
            return Observation(observed=observed, public=public,
                               simulate=sgd_simulator(self.model, server, target.batch_size, self.protocol),
                               knowledge=self.knowledge, notes=tuple(notes), metrics=metrics, exact=k_clients == 1)
        # exact: simulate(the target's own inputs) reproduces the observation only when K = 1; for K > 1 it
        # needs all K clients' inputs (it does reproduce it then, to CKKS precision: see the tests)
        return Observation(observed=observed, public=dataclasses.replace(public, num_images=k_clients * len(target)),
                           simulate=self.aggregate_simulator(server, target.batch_size), knowledge=self.knowledge,
                           notes=tuple(notes), metrics=metrics, exact=k_clients == 1)
