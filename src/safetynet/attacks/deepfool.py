"""DeepFool under L2, batched over samples and candidate classes, with targeted and top-k variants."""

from __future__ import annotations

import torch
from torch import nn

from .._validation import check_positive
from ..errors import InputError
from ._gradient import check_steps
from .base import Attack, check_mask_values, to_fast_layout
from .criteria import Criterion

# Added to the step length (as in the reference implementation) so the linearised boundary is
# crossed rather than only reached.
_STEP_EPS = 1e-4
# Guards divisions by a gradient norm that is zero (e.g. a fully masked input).
_NORM_EPS = 1e-8


class DeepFool(Attack):
    r"""DeepFool from 'DeepFool: a simple and accurate method to fool deep neural networks'
    (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016) [https://arxiv.org/abs/1511.04599].

    Distance Measure : L2

    Linearises the classifier at the current point, steps to the nearest linearised class
    boundary and repeats until the criterion holds; the final perturbation is the sum of the
    steps times ``1 + overshoot``. What "the boundary" is comes from the criterion's excluded
    classes (:meth:`Criterion.excluded_classes`): the top-1 label must leave that set, so at each
    step the attack crosses from the strongest excluded class to the nearest allowed candidate.

    * ``Misclassification(labels)``: leave the true label (the classic attack);
    * ``TargetedMisclassification(targets)``: reach the target (the only allowed class);
    * ``TopKMisclassification(labels, k=5)``: leave the clean top-5 (the paper's "DeepFool-5").

    The whole batch is attacked at once: one forward pass and one backward pass per candidate
    class over all samples still being attacked, and each sample drops out of the batch as soon
    as its criterion holds. A minimisation attack: ``eps`` may be None (no budget) or a list of
    L2 budgets the result is clipped to.

    Candidate restriction (``candidates=C``, as Foolbox's ``candidates``): a step costs one
    backward pass per candidate, so on a 1,000-class model the full attack costs ~1,000 backward
    passes a step and the restricted one C. The candidates are the C most likely allowed classes
    on the *clean* image, fixed for the whole attack: each step minimises the linearised
    distance over this subset only, so a step is never shorter than the full attack's at the
    same point, and a boundary to an unlikely class is never taken. Since the nearest boundary
    is almost always a likely class, the results agree: on EfficientNet-Lite0 (ImageNet, top-5
    criterion) C=10 and all classes give the same success and L2 within 10 %
    (``tests/test_imagenet.py``). Foolbox counts the label among its candidates: its
    ``candidates=C + 1`` is ours ``C``.

    Arguments:
        steps (int): maximum number of linearisation steps. (Default: 50)
        overshoot (float): relative overshoot of the summed perturbation. (Default: 0.02)
        candidates (int or None): how many allowed classes to consider per sample, the most
            likely ones on the clean input; None for all. (Default: 10)
        mask (Tensor or None): 0/1 tensor broadcastable to the images; 1 where the input may
            change. (Default: None, every element)

    Call:
        ``attack(model, images, labels_or_criterion, eps=None)`` with images (N, C, H, W) in
        [0, 1]; returns ``AttackResult(raw, clipped, success)``.

    Examples::
        >>> attack = DeepFool(steps=50, overshoot=0.02)
        >>> raw, adv, success = attack(model, images, labels)
        >>> raw, adv, success = attack(model, images, TopKMisclassification(labels, k=5))
    """

    distance = "l2"
    requires_eps = False

    def __init__(self, *, steps: int = 50, overshoot: float = 0.02, candidates: int | None = 10,
                 mask: torch.Tensor | None = None) -> None:
        self.steps = check_steps(steps)
        self.overshoot = check_positive(overshoot, "overshoot", allow_zero=True)
        if candidates is not None:
            check_steps(candidates, "candidates")
        self.candidates = candidates
        self.mask = check_mask_values(mask)

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *, eps: float | None = None) -> torch.Tensor:
        n = x.shape[0]
        with torch.no_grad():
            clean_logits = model(x)  # (N, C)
        num_classes = clean_logits.shape[1]
        excluded = criterion.excluded_classes(num_classes)
        if excluded is None:
            raise InputError("DeepFool needs a criterion that names classes (Misclassification, "
                             "TargetedMisclassification or TopKMisclassification, possibly combined with &)")
        excluded = excluded.to(x.device)  # (N, C) bool: classes the top-1 label must leave
        allowed = ~excluded
        n_allowed = allowed.sum(1)
        if not (n_allowed > 0).all():
            raise InputError("the criterion excludes every class for some samples; nothing to move to")
        m = int(n_allowed.max())
        if self.candidates is not None:
            m = min(m, self.candidates)
        # The m most likely allowed classes on the clean input; rows with fewer allowed classes
        # are padded with excluded ones, which ``cand_ok`` switches off.
        cand = clean_logits.masked_fill(excluded, float("-inf")).topk(m, dim=1).indices  # (N, M)
        cand_ok = allowed.gather(1, cand)  # (N, M)
        mask = None if self.mask is None else self.mask.to(device=x.device, dtype=x.dtype).expand_as(x)

        x_adv = x.clone()
        r_tot = torch.zeros_like(x)
        active = torch.arange(n, device=x.device)
        # A channels-last input makes CPU convolutions (forward and input gradient) ~20 % faster
        # (measured on ResNet-20, see benchmarks/README.md) without touching the model.
        for _ in range(self.steps):
            xa = to_fast_layout(x_adv[active]).requires_grad_(True)
            logits = model(xa)
            done = criterion.subset(active)(xa.detach(), logits.detach())
            if done.any():
                active = active[~done]
                if active.numel() == 0:
                    break
                # A fresh forward pass of the rest costs less than M backward passes through
                # samples that are already finished.
                xa = to_fast_layout(x_adv[active]).requires_grad_(True)
                logits = model(xa)
            r = self._step(xa, logits, excluded[active], cand[active], cand_ok[active],
                           None if mask is None else mask[active])
            r_tot[active] += r
            x_adv[active] = (x[active] + (1.0 + self.overshoot) * r_tot[active]).clamp(0.0, 1.0)
        return x_adv

    @staticmethod
    def _step(xa: torch.Tensor, logits: torch.Tensor, excluded: torch.Tensor, cand: torch.Tensor,
              cand_ok: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The minimal L2 step to the nearest linearised boundary, for each active sample."""
        a = logits.shape[0]
        rows = torch.arange(a, device=xa.device)
        lg = logits.detach()
        # The excluded class the sample currently sits in (the strongest one): the boundary to
        # cross is between it and an allowed candidate.
        i_star = lg.masked_fill(~excluded, float("-inf")).argmax(1)  # (A,)
        best_dist = torch.full((a,), float("inf"), device=xa.device, dtype=xa.dtype)
        best_w = torch.zeros_like(xa)
        best_norm = torch.ones_like(best_dist)
        n_cand = cand.shape[1]
        for j in range(n_cand):
            cj = cand[:, j]
            go = torch.zeros_like(lg)
            go[rows, cj] += 1.0
            go[rows, i_star] -= 1.0
            # Backward of sum_n (f_cj - f_i*)(x_n): the samples are independent in eval mode, so
            # one pass gives every sample's gradient of its own logit difference.
            (w,) = torch.autograd.grad(logits, xa, go, retain_graph=j < n_cand - 1)  # (A, C, H, W)
            if mask is not None:
                w = w * mask
            w_norm = w.flatten(1).norm(p=2, dim=1)
            gap = (lg[rows, cj] - lg[rows, i_star]).abs()
            dist = gap / (w_norm + _NORM_EPS)
            dist = torch.where(cand_ok[:, j], dist, torch.full_like(dist, float("inf")))
            better = dist < best_dist
            best_dist = torch.where(better, dist, best_dist)
            best_norm = torch.where(better, w_norm, best_norm)
            best_w = torch.where(better.view(-1, 1, 1, 1), w, best_w)
        scale = (best_dist + _STEP_EPS) / (best_norm + _NORM_EPS)
        return scale.view(-1, 1, 1, 1) * best_w
