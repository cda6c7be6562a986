"""Measure TenSEAL's CKKS cost per ciphertext, for the time model of ``he backend=simulated``.

    OMP_NUM_THREADS=1 python benchmarks/he_rates.py            # default parameters, 40 ciphertexts
    OMP_NUM_THREADS=1 python benchmarks/he_rates.py --all      # also N = 4096 and N = 16384 (scaling check)

Each role's step is timed per full ciphertext (N/2 values) exactly as ``defenses/he/ckks.py`` runs it with
``backend=tenseal``: the client encrypts under the public context and serialises; the aggregator
deserialises under its public context and adds (per input ciphertext); the key holder receives the
serialised sum, deserialises it under the secret-key context and decrypts. The script prints the
median seconds per ciphertext and the lines to paste into ``defenses/he/ckks.py`` (``TENSEAL_RATES``).
Needs TenSEAL (``pip install -e ".[he]"``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

PARAMETERS = {
    "default": (8192, (60, 40, 40, 60), 40),
    "small": (4096, (40, 20, 40), 20),
    "large": (16384, (60, 40, 40, 40, 40, 60), 40),
}


def measure(poly_modulus: int, coeff_bits: tuple[int, ...], scale_bits: int, ciphertexts: int, clients: int) -> dict:
    import tenseal as ts

    began = time.perf_counter()
    secret = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=poly_modulus, coeff_mod_bit_sizes=list(coeff_bits))
    secret.global_scale = 2.0**scale_bits
    keygen = time.perf_counter() - began
    public = ts.context_from(secret.serialize(save_secret_key=False))
    slots = poly_modulus // 2
    rng = np.random.default_rng(0)
    encrypt, add, decrypt = [], [], []
    for _ in range(ciphertexts):
        values = [rng.normal(0, 0.01, slots).tolist() for _ in range(clients)]
        sent = []
        for v in values:  # clients
            t = time.perf_counter()
            sent.append(ts.ckks_vector(public, v).serialize())
            encrypt.append(time.perf_counter() - t)
        t = time.perf_counter()  # aggregator: deserialise and add every client's ciphertext, then hand over
        total = ts.ckks_vector_from(public, sent[0])
        for message in sent[1:]:
            total = total + ts.ckks_vector_from(public, message)
        handed = total.serialize()
        add.append((time.perf_counter() - t) / clients)
        t = time.perf_counter()  # key holder
        ts.ckks_vector_from(secret, handed).decrypt()
        decrypt.append(time.perf_counter() - t)
    return {
        "poly_modulus": poly_modulus,
        "coeff_bits": coeff_bits,
        "keygen": keygen,
        "encrypt": statistics.median(encrypt),
        "add": statistics.median(add),
        "decrypt": statistics.median(decrypt),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ciphertexts", type=int, default=40)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--all", action="store_true", help="also the small and large parameter sets")
    args = parser.parse_args()
    names = list(PARAMETERS) if args.all else ["default"]
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    for name in names:
        n, bits, scale = PARAMETERS[name]
        r = measure(n, bits, scale, args.ciphertexts, args.clients)
        print(
            f"{name}: N={n} coeff_bits={list(bits)}: keygen {r['keygen']:.4f} s; per ciphertext: encrypt "
            f"{r['encrypt']:.6f} s, add {r['add']:.6f} s, decrypt {r['decrypt']:.6f} s"
        )
        if name == "default":
            print(
                f"TENSEAL_RATES = CKKSRates(poly_modulus={n}, data_primes={len(bits) - 1}, "
                f"encrypt={r['encrypt']:.3g}, add={r['add']:.3g}, decrypt={r['decrypt']:.3g}, keygen={r['keygen']:.3g})"
            )


if __name__ == "__main__":
    main()
