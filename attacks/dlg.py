"""DLG — Deep Leakage from Gradients (Zhu et al., NeurIPS 2019; mit-han-lab/dlg).

Images and label logits start from random normals and are optimised *jointly* with L-BFGS (lr 1)
to minimise the unweighted squared-L2 distance between the simulated and the observed tensors,
summed over all layers, with a soft-label cross-entropy on softmax(label logits); 300 L-BFGS steps
(each up to 20 inner iterations, PyTorch's default, as in the reference code). No prior, no box.
Unknowns the threat model marks optimisable join the L-BFGS variables. Returns the best iterate.
"""

from __future__ import annotations

import torch

from bench.attack import Attack, Reconstruction
from bench.inversion import GradientMatching, image_init, label_logits_init, lbfgs, lbfgs_options, unknown_variables
from bench.progress import Progress
from bench.threat import Observation


class DLG(Attack):
    """DLG (Zhu et al. 2019): joint L-BFGS on images and soft labels, squared-L2 gradient distance."""

    name = "dlg"
    description = __doc__
    options = lbfgs_options()

    def reconstruct(self, obs: Observation, generator: torch.Generator, progress: Progress) -> Reconstruction:
        x = image_init(obs, generator).requires_grad_(True)
        label_logits = label_logits_init(obs, generator).requires_grad_(True)
        unknowns, free = unknown_variables(obs)
        objective = GradientMatching(obs, distance="l2")

        def loss() -> torch.Tensor:
            return objective.loss(x, torch.softmax(label_logits, dim=-1), unknowns)

        result = lbfgs(
            [x, label_logits, *free],
            loss,
            self.opt.iterations,
            progress,
            lr=self.opt.lr,
            max_iter=self.opt.max_iter,
            tol=self.opt.tol,
            description="dlg",
        )
        images, logits = result.values[0], result.values[1]
        return Reconstruction(
            images=images,
            labels=logits.argmax(dim=-1),
            loss=result.loss,
            iterations=result.iterations,
            diverged=result.diverged,
            info={
                "label_source": "optimised (soft labels)",
                "initial_loss": result.initial_loss,
                "improved": result.improved,
            },
        )
