"""CKKS for bench's he defense: parameters, the noise and cost models, and the three roles (clients
encrypt under a public context, the server adds ciphertexts, a key holder alone decrypts the aggregate),
real (TenSEAL) or simulated.

Backends (``backend``):
* ``tenseal``: real CKKS with TenSEAL (optional dependency, ``pip install 'bench-fl[he]'``). Each
  client's vector is packed N/2 values per ciphertext, encrypted and serialised; the server
  deserialises and adds under its public context; the key holder decrypts. Bytes are the serialised
  sizes; encrypt/aggregate/decrypt seconds are measured. TenSEAL's key generation and encryption
  randomness cannot be seeded: runs agree to CKKS precision, not bits.
* ``simulated`` (default, no TenSEAL): the same roles and the same aggregate plus the approximation
  error CKKS makes, drawn from its noise model (below); ciphertext sizes are computed from the
  parameters as SEAL's uncompressed size, 2 polynomials × N coefficients × L data primes × 8 bytes
  per ciphertext (an upper bound: TenSEAL's zstd-compressed serialisation is about 16 % smaller).
  Nothing is encrypted, so its seconds are *modelled* from TenSEAL's measured cost per ciphertext
  (:data:`TENSEAL_RATES`, measured by ``benchmarks/he_rates.py``), and rows say so
  (``he_seconds_source``). The modelled seconds are not in the measured wall time of a training
  round (``seconds``); ``server_metrics()["modelled_seconds"]`` gives the round's total (every
  client's encryption, the aggregation and the decryption) and training rows add it in
  ``modelled_seconds_per_round``.

Noise model (SEAL's CKKS, fresh public-key ciphertexts, additions only): encoding rounds Δ·m to
integers; encryption ends with a modulus switch that drops the special prime and leaves rounding
errors r₀ + r₁·s (r uniform in ±½, s the ternary secret key). Decoding evaluates the error polynomial
at the slot's root ζⱼ — a ring homomorphism — so slot j's error is Re(a + r₁(ζⱼ)·s(ζⱼ)) / Δ with a
the encoding and r₀ terms: Gaussian given the key, with a variance that depends on |s(ζⱼ)|, hence
heavy-tailed over slots (excess kurtosis ≈ 3). Its std is √(N/12 + N²/36) / Δ per ciphertext and √K
times that for a sum of K: 1.24e-9 for N = 8192, Δ = 2^40 (TenSEAL measured 1.24e-9, kurtosis 2.8-3.1).
The simulation keeps the roles: a client draws the key-independent rounding terms (a, r₁(ζⱼ)) with
the public context, they add up under aggregation, and only the key holder applies s(ζⱼ).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from bench.errors import BenchError
from bench.threat import Tensors

BACKENDS = ("simulated", "tenseal")
#: SEAL's largest total coefficient-modulus size (bits) for 128-bit security, by polynomial degree.
SEAL_MAX_COEFF_BITS = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
BUFFER_PREFIX = "buffer:"
MEASURED = "measured (TenSEAL)"
MODELLED = "modelled from TenSEAL rates (benchmarks/he_rates.py)"


@dataclass(frozen=True)
class CKKSParams:
    """CKKS parameters: polynomial degree N, coefficient-modulus prime sizes (last = special prime), scale 2^bits."""

    poly_modulus: int = 8192
    coeff_bits: tuple[int, ...] = (60, 40, 40, 60)
    scale_bits: int = 40

    def validate(self) -> None:
        where = "defense 'he'"
        if self.poly_modulus not in SEAL_MAX_COEFF_BITS:
            raise BenchError(
                f"{where} option 'poly_modulus' must be one of {sorted(SEAL_MAX_COEFF_BITS)}, got {self.poly_modulus}"
            )
        if len(self.coeff_bits) < 2 or not all(20 <= b <= 60 for b in self.coeff_bits):
            raise BenchError(
                f"{where} option 'coeff_bits' needs at least 2 prime sizes, each 20..60 bits, "
                f"got {','.join(map(str, self.coeff_bits))}"
            )
        if sum(self.coeff_bits) > SEAL_MAX_COEFF_BITS[self.poly_modulus]:
            raise BenchError(
                f"{where}: coeff_bits sum to {sum(self.coeff_bits)} bits, more than the "
                f"{SEAL_MAX_COEFF_BITS[self.poly_modulus]} that N={self.poly_modulus} allows "
                f"(128-bit security)"
            )
        if not 1 <= self.scale_bits < sum(self.coeff_bits[:-1]) - 1:
            raise BenchError(
                f"{where} option 'scale_bits' must be in 1..{sum(self.coeff_bits[:-1]) - 2} "
                f"(below the data modulus), got {self.scale_bits}"
            )

    @property
    def slots(self) -> int:
        return self.poly_modulus // 2

    @property
    def data_primes(self) -> int:
        return len(self.coeff_bits) - 1

    def ciphertexts(self, values: int) -> int:
        return -(-values // self.slots)

    def ciphertext_bytes(self) -> int:
        """SEAL's uncompressed size of one fresh ciphertext: 2 polynomials × N × L data primes × 8 bytes."""
        return 2 * self.poly_modulus * self.data_primes * 8

    def error_std(self, ciphertexts_added: int = 1) -> float:
        """Std of the error in each decrypted value of a sum of fresh ciphertexts (module docstring)."""
        n = self.poly_modulus
        return math.sqrt(ciphertexts_added * n * (2 + 2 * n / 3) / 24) / 2.0**self.scale_bits

    def as_dict(self) -> dict[str, Any]:
        return {"poly_modulus": self.poly_modulus, "coeff_bits": list(self.coeff_bits), "scale_bits": self.scale_bits}


# --- the time model of the simulated backend -------------------------------------------------------------
@dataclass(frozen=True)
class CKKSRates:
    """TenSEAL's seconds per full ciphertext at one parameter set: a client's encrypt + serialise, the
    aggregator's deserialise + add (per input ciphertext, with the hand-over's serialise), the key
    holder's deserialise + decrypt; and one key generation."""

    poly_modulus: int
    data_primes: int
    encrypt: float
    add: float
    decrypt: float
    keygen: float

    def work(self) -> float:
        """N·log₂N·L: what the NTT-dominated cost of a ciphertext grows with."""
        return self.poly_modulus * math.log2(self.poly_modulus) * self.data_primes


#: Measured with ``OMP_NUM_THREADS=1 python benchmarks/he_rates.py --all`` (TenSEAL 0.3.18, x86_64, one
#: thread on a 2-core machine shared with other jobs: medians of 40 ciphertexts, 4 clients). Between the
#: three sets the cost per ciphertext follows N·log₂N·L within 15 % (encrypt) to 2× (decrypt).
TENSEAL_RATES: tuple[CKKSRates, ...] = (
    CKKSRates(poly_modulus=4096, data_primes=2, encrypt=1.82e-3, add=2.91e-4, decrypt=4.28e-4, keygen=0.0302),
    CKKSRates(poly_modulus=8192, data_primes=3, encrypt=6.90e-3, add=5.98e-4, decrypt=1.18e-3, keygen=0.0608),
    CKKSRates(poly_modulus=16384, data_primes=5, encrypt=2.16e-2, add=3.45e-3, decrypt=8.15e-3, keygen=0.141),
)


def modelled_rates(params: CKKSParams) -> CKKSRates:
    """The measured rates of the closest measured parameter set (same N, else the nearest), scaled by
    N·log₂N·L to ``params``: a model, and rows that use it say so."""
    nearest = min(
        TENSEAL_RATES,
        key=lambda r: (abs(math.log2(r.poly_modulus / params.poly_modulus)), abs(r.data_primes - params.data_primes)),
    )
    factor = params.poly_modulus * math.log2(params.poly_modulus) * params.data_primes / nearest.work()
    return CKKSRates(
        params.poly_modulus,
        params.data_primes,
        nearest.encrypt * factor,
        nearest.add * factor,
        nearest.decrypt * factor,
        nearest.keygen * factor,
    )


# --- the simulated backend: the roles without cryptography ------------------------------------------------
class SimulatedPublicContext:
    """What the public key gives a client or the server in the simulation: the parameters. Encrypting
    needs no key here either: a fresh ciphertext's key-dependent error term is applied at decryption."""

    def __init__(self, params: CKKSParams) -> None:
        self.params = params

    def is_private(self) -> bool:
        return False


class SimulatedEncryptor:
    """A client's encryption: the plaintext travels as a stand-in for the ciphertext, with the rounding
    terms of a fresh encryption at each slot's root — a (real, variance N/12) and r₁(ζⱼ) (complex,
    variance N/12) — drawn per encryption; the error is Re(a + r₁(ζⱼ)·s(ζⱼ)) / Δ once decrypted."""

    measured = False

    def __init__(self, context: SimulatedPublicContext) -> None:
        self.context = context
        self.params = context.params

    def encrypt(self, vector: torch.Tensor, generator: torch.Generator | None) -> Tensors:
        n = self.params.poly_modulus
        scale = 2.0**self.params.scale_bits
        values = vector.detach().double().cpu()
        draw = torch.randn(values.numel(), 3, generator=generator, dtype=torch.float64)
        a_re = math.sqrt(n / 12) * draw[:, 0]
        r1 = math.sqrt(n / 24) * draw[:, 1:]
        return {"ckks_slots": values + a_re / scale, "ckks_r1": r1 / scale}

    def wire_bytes(self, message: Tensors) -> int:
        return self.params.ciphertexts(message["ckks_slots"].numel()) * self.params.ciphertext_bytes()


class SimulatedAggregator:
    """The server's step: adds the messages slot by slot (the rounding terms add up, as in CKKS)."""

    def __init__(self, context: SimulatedPublicContext) -> None:
        self.context = context

    def add(self, messages: Sequence[Tensors]) -> Tensors:
        return {key: torch.stack([m[key] for m in messages]).sum(0) for key in messages[0]}


class SimulatedKeyHolder:
    """Holds s(ζⱼ) for each slot j (the secret key at the slots' roots: complex Gaussian, variance 2N/3,
    fixed for the key) and applies it when decrypting an aggregate. So slots differ in error size and
    the errors are heavy-tailed (a Gaussian scale mixture), as measured with TenSEAL."""

    measured = False

    def __init__(self, params: CKKSParams, generator: torch.Generator) -> None:
        self.params = params
        n = params.poly_modulus
        self._key = math.sqrt(n / 3) * torch.randn(params.slots, 2, generator=generator, dtype=torch.float64)
        self.keygen_seconds = modelled_rates(params).keygen

    def is_private(self) -> bool:
        return True

    def public_context(self) -> SimulatedPublicContext:
        return SimulatedPublicContext(self.params)

    def decrypt(self, aggregate: Tensors, length: int) -> torch.Tensor:
        key = self._key[torch.arange(aggregate["ckks_slots"].numel()) % self.params.slots]
        r1 = aggregate["ckks_r1"]
        values = aggregate["ckks_slots"] + r1[:, 0] * key[:, 0] - r1[:, 1] * key[:, 1]
        return values[:length]


# --- the TenSEAL backend --------------------------------------------------------------------------------
class TenSEALEncryptor:
    """A client's encryption under the public context: N/2 values per ciphertext, serialised (what
    travels and is counted)."""

    measured = True

    def __init__(self, context: Any, params: CKKSParams) -> None:
        import tenseal as ts

        self.ts = ts
        self.context = context
        self.params = params

    def encrypt(self, vector: torch.Tensor, generator: torch.Generator | None) -> Tensors:
        values = vector.detach().double().cpu()
        message = {}
        for i, start in enumerate(range(0, values.numel(), self.params.slots)):
            chunk = values[start : start + self.params.slots].tolist()
            data = self.ts.ckks_vector(self.context, chunk).serialize()
            message[f"ct{i}"] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return message

    def wire_bytes(self, message: Tensors) -> int:
        return int(sum(t.numel() for t in message.values()))


class TenSEALAggregator:
    """The server's step under the public context: deserialise, add, serialise the sums for the key holder."""

    def __init__(self, context: Any) -> None:
        import tenseal as ts

        self.ts = ts
        self.context = context

    def add(self, messages: Sequence[Tensors]) -> list[bytes]:
        total = []
        for key in messages[0]:
            acc = self.ts.ckks_vector_from(self.context, messages[0][key].numpy().tobytes())
            for m in messages[1:]:
                acc = acc + self.ts.ckks_vector_from(self.context, m[key].numpy().tobytes())
            total.append(acc.serialize())
        return total


class TenSEALKeyHolder:
    """The only holder of the secret-key context; hands out public copies (serialised without the secret
    key) and decrypts the serialised aggregates it receives."""

    measured = True

    def __init__(self, params: CKKSParams, generator: torch.Generator) -> None:
        """A fresh context and key pair (TenSEAL's randomness cannot be seeded: ``generator`` is unused)."""
        import tenseal as ts

        self.ts = ts
        self.params = params
        began = time.perf_counter()
        try:
            self._context = ts.context(
                ts.SCHEME_TYPE.CKKS,
                poly_modulus_degree=params.poly_modulus,
                coeff_mod_bit_sizes=list(params.coeff_bits),
            )
        except ValueError as exc:
            raise BenchError(f"defense 'he': TenSEAL rejects the CKKS parameters {params.as_dict()}: {exc}") from None
        self._context.global_scale = 2.0**params.scale_bits
        self.keygen_seconds = time.perf_counter() - began

    def is_private(self) -> bool:
        return bool(self._context.is_private())

    def public_context(self) -> Any:
        """A new context object holding the parameters and public key only."""
        return self.ts.context_from(self._context.serialize(save_secret_key=False))

    def decrypt(self, aggregate: Sequence[bytes], length: int) -> torch.Tensor:
        values = [x for data in aggregate for x in self.ts.ckks_vector_from(self._context, data).decrypt()]
        return torch.tensor(values[:length], dtype=torch.float64)


@dataclass(frozen=True)
class CKKSRoles:
    """One federation's CKKS parties: the key holder, and the clients' and the server's public-context sides."""

    key_holder: SimulatedKeyHolder | TenSEALKeyHolder
    encryptor: SimulatedEncryptor | TenSEALEncryptor
    aggregator: SimulatedAggregator | TenSEALAggregator

    @property
    def measured(self) -> bool:
        return self.encryptor.measured


def check_backend(name: str) -> None:
    """A one-line error when ``backend=tenseal`` is chosen without TenSEAL installed."""
    if name == "tenseal":
        try:
            import tenseal  # noqa: F401
        except ImportError:
            raise BenchError(
                "defense 'he' backend=tenseal needs TenSEAL: pip install 'bench-fl[he]' (or use backend=simulated)"
            ) from None


def make_roles(name: str, params: CKKSParams, generator: torch.Generator) -> CKKSRoles:
    """Key generation by the key holder, then the public context handed to the clients and the server."""
    check_backend(name)
    if name == "tenseal":
        holder = TenSEALKeyHolder(params, generator)
        return CKKSRoles(
            holder, TenSEALEncryptor(holder.public_context(), params), TenSEALAggregator(holder.public_context())
        )
    holder_ = SimulatedKeyHolder(params, generator)
    return CKKSRoles(
        holder_, SimulatedEncryptor(holder_.public_context()), SimulatedAggregator(holder_.public_context())
    )


def fresh_generator() -> torch.Generator:
    """A generator seeded from torch's global RNG (which the harness seeds before ``init_server``)."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))


def flatten(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).double().cpu() for t in tensors.values()])


def unflatten(vector: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Tensors:
    out, start = {}, 0
    for k, t in like.items():
        out[k] = vector[start : start + t.numel()].reshape(t.shape).to(dtype=t.dtype, device=t.device)
        start += t.numel()
    return out


def parse_coeff_bits(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise BenchError(
            f"defense 'he' option 'coeff_bits' expects comma-separated integers such as 60,40,40,60, got {text!r}"
        ) from None
