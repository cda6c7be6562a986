"""The analytic attack's declared options (its defaults are the run's; the sweeps set 2000 steps, one restart)."""

from __future__ import annotations

from bench.options import Option

OPTIONS = (
    Option("iterations", int, 4000, "Adam steps of the image recovery (the sweeps use 2000)", min=1),
    Option(
        "restarts",
        int,
        3,
        "independent restarts per target (with tv_spread: priors of several strengths); the lowest matching loss wins",
        min=1,
    ),
    Option("lr", float, 0.1, "Adam learning rate", min=0.0, min_exclusive=True),
    Option("tv", float, 0.1, "weight of the anisotropic total-variation prior", min=0.0),
    Option(
        "tv_spread",
        float,
        2.0,
        "restart r uses tv × spread^k_r, k = 0, 1, −1, 2, −2, …: restarts try priors of several strengths, "
        "and the lowest matching loss picks one (1: every restart uses tv)",
        min=1.0,
    ),
    Option("feature_weight", float, 1.0, "weight of the recovered-feature match", min=0.0),
    Option(
        "replay_weight",
        float,
        1.0,
        "weight of the head-free replay of the layers below (0: features only)",
        min=0.0,
    ),
    Option("signed", bool, True, "step on the sign of the image gradient"),
    Option("decay", bool, True, "learning rate ×0.1 at 3/8, 5/8 and 7/8 of the iterations"),
    Option("layer", str, "first", "which observed linear layer to read: 'first' (nearest the input) or a module name"),
    Option(
        "peel",
        str,
        "auto",
        "recover the inputs of the convolution blocks below the leaky layer from their weight gradients' "
        "row space where that determines them ('auto'), and match the lowest one reached; 'off': match the "
        "leaky layer's input",
        choices=("auto", "off"),
    ),
    Option(
        "descend",
        str,
        "average",
        "after the image recovery, solve the input of the block below the matched one through its max-pool "
        "(switches searched by the block's residual) and recover the image again matching it; the answer is "
        "the mean of the two images ('average') or the one that matches the observation better ('compete'); "
        "'off': one recovery",
        choices=("average", "compete", "off"),
    ),
    Option("target_batch", int, 16, "targets optimised together in one tensor (1: one at a time)", min=1),
    Option(
        "recursion",
        str,
        "auto",
        "R-GAP's closed-form recursion through the convolutions below: 'auto' where no max-pool lies "
        "below, 'switches' also through max-pools (switches from the matching estimate), 'off'",
        choices=("auto", "switches", "off"),
    ),
)
