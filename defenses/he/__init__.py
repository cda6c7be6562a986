"""HE — homomorphic encryption (CKKS): the server adds ciphertexts and only the aggregate is decrypted.

:mod:`bench.defenses.he.defense` is the defense and its threat model; :mod:`bench.defenses.he.ckks` the
scheme (parameters, noise and cost models, the clients', server's and key holder's roles, real or simulated).
"""

from bench.defenses.he.ckks import MEASURED, MODELLED, TENSEAL_RATES, CKKSParams, make_roles, modelled_rates
from bench.defenses.he.defense import HE

__all__ = ["HE", "MEASURED", "MODELLED", "TENSEAL_RATES", "CKKSParams", "make_roles", "modelled_rates"]
