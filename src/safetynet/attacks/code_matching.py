"""Code matching: a feature adversary that copies the activation code of a natural image of the target class.

After Sabour, Cao, Faghri, Fleet, "Adversarial Manipulation of Deep Representations", ICLR 2016
[https://arxiv.org/abs/1511.05122], adapted to SafetyNet (Lu et al., ICCV 2017): the detector
accepts codes that look like natural codes, so the attacker picks, for each image and its target
class, a natural training image of that class whose code is accepted by the detector (the one
nearest in code space, or the most natural one by detector score) and pushes the tapped
activations to the same side of every threshold, with a margin, while the classifier moves to
the target class.

Distance Measure : L∞ or L2

Loss per image (minimised by PGD):

``mean_u [max(t_{l_u - 1} + m_u - a_u, 0) + max(a_u - ub_u, 0)] + c * CW_targeted(z, target)``

where ``l_u`` is the anchor's level of unit ``u``, ``m_u = margin * std_u`` (the unit's spread
over the natural bank), ``ub_u = t_{l_u} - m_u`` (or ``t_{l_u}`` when that would be below a
ReLU's zero), and terms without a neighbouring threshold are dropped. Layers of an ensemble are
matched together, to the codes of one anchor image.

Targets: a ``TargetedMisclassification`` criterion gives them; otherwise each image's
runner-up class on the clean input. The bank is coded once, on first use.

Example::

    >>> attack = CodeMatching(net, bank_images, bank_labels, steps=100)
    >>> raw, adv, success = attack(net.model, x, Misclassification(y) & Undetected(net), eps=0.1)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_images, check_labels, check_positive
from ..errors import InputError
from .detector_scores import _check_safetynet
from .joint_pgd import JointPGD, _check_choice, classifier_loss

__all__ = ["CodeMatching"]


class CodeMatching(JointPGD):
    r"""Feature-adversary attack on SafetyNet's codes (Sabour et al., ICLR 2016, adapted).

    Distance Measure : L∞ or L2

    Arguments:
        net: a fitted SafetyNet (its layers, pooling, thresholds are matched).
        bank_images (Tensor): natural images (M, C, H, W) in [0, 1], e.g. training images.
        bank_labels (Tensor): their labels (M,).
        anchor (str): "nearest" (the code nearest to the image's own, summed over layers) or
            "most_natural" (the lowest real detector score of the class). (Default: "nearest")
        margin (float): threshold margin in units of each unit's natural std. (Default: 0.1)
        c (float): weight of the targeted CW classifier term. (Default: 1.0)
        kappa (float): CW confidence. (Default: 0.0)
        other keywords: ``distance``, ``steps``, ``step_size``, ``random_start``, ``seed``,
            ``early_stop`` as in :class:`~safetynet.attacks.joint_pgd.JointPGD`.

    Only bank images the classifier labels correctly and the real detector accepts serve as
    anchors.

    Call:
        ``attack(net.model, images, Misclassification(y) & Undetected(net), eps=0.1)``.

    Examples::
        >>> raw, adv, ok = CodeMatching(net, x_train, y_train)(net.model, x, Misclassification(y) & Undetected(net), eps=0.1)
    """

    def __init__(self, net: Any, bank_images: torch.Tensor, bank_labels: torch.Tensor, *, anchor: str = "nearest",
                 margin: float = 0.1, **kwargs: Any) -> None:
        self.net = _check_safetynet(net)
        self.bank_images = check_images(bank_images, "bank_images")
        self.bank_labels = check_labels(bank_labels, len(bank_images), name="bank_labels")
        self.anchor = _check_choice(anchor, "anchor", ("nearest", "most_natural"))
        self.margin = check_positive(margin, "margin", allow_zero=True)
        for bad in ("score", "detector_loss", "detector_kappa", "combine"):
            if bad in kwargs:
                raise InputError(f"CodeMatching does not take {bad}=; its detector term is the code hinge")
        super().__init__(None, **kwargs)
        self._bank: dict[str, Any] | None = None

    # -- the bank of natural codes ------------------------------------------------------------
    def _build_bank(self) -> dict[str, Any]:
        """Codes, scales and scores of the accepted, correctly classified bank images (once)."""
        if self._bank is not None:
            return self._bank
        from ..codes import layer_activations

        net = self.net
        out = net.classify(self.bank_images)
        keep = (out.logits.argmax(1) == self.bank_labels) & ~torch.from_numpy(out.detected)
        if not keep.any():
            raise InputError("no bank image is both classified correctly and accepted by the detector; "
                             "give natural images of the classes as the bank")
        acts = layer_activations(net.model, self.bank_images[keep], net.layers, net.pool, net.batch_size)
        codes = {n: torch.from_numpy(net.quantizers_[n].transform(acts[n])) for n in net.layers}  # (M, D) uint8
        scale = {n: acts[n].std(0).clamp_min(1e-6) for n in net.layers}  # (D,)
        self._bank = {"codes": codes, "scale": scale, "labels": self.bank_labels[keep],
                      "score": torch.from_numpy(out.score[keep.numpy()])}
        return self._bank

    def _anchors(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Index of each image's anchor in the bank (N,) and whether its class had any (N,) bool."""
        from ..detectors.kernel import squared_distances

        bank = self._build_bank()
        same = targets[:, None] == bank["labels"][None]  # (N, M)
        if self.anchor == "most_natural":
            cost = bank["score"][None].expand(len(x), -1).clone().double()
        else:
            own = self.net.codes(x)
            cost = sum(torch.from_numpy(squared_distances(own[n], bank["codes"][n].numpy())).double()
                       for n in self.net.layers)
        cost = cost.masked_fill(~same, float("inf"))
        return cost.argmin(1), same.any(1)

    # -- JointPGD hooks -------------------------------------------------------------------------
    def _prepare(self, model: nn.Module, x: torch.Tensor, classes: torch.Tensor, targeted: bool) -> dict:
        if model is not self.net.model:
            raise InputError("call CodeMatching with the SafetyNet's own classifier (attack(net.model, ...))")
        if targeted:
            targets = classes
        else:
            with torch.no_grad():
                logits = model(x)
            # Runner-up on the clean image: the nearest wrong class is the cheapest to reach.
            targets = logits.masked_fill(F.one_hot(classes, logits.shape[1]).bool(), -float("inf")).argmax(1)
        anchor, has = self._anchors(x, targets)
        return {"targets": targets, "anchor": anchor, "has_anchor": has}

    def _direction(self, model: nn.Module, xa: torch.Tensor, idx: torch.Tensor, classes: torch.Tensor,
                   targeted: bool, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
        from ..codes import pool_activation
        from ..taps import forward_with_taps
        from .detector_scores import eval_mode

        net, bank = self.net, self._build_bank()
        targets, anchor = state["targets"][idx], state["anchor"][idx]
        has = state["has_anchor"][idx].to(xa.dtype)
        with eval_mode(model):
            logits, acts = forward_with_taps(model, xa, net.layers)
        match = torch.zeros(len(xa), dtype=xa.dtype, device=xa.device)
        for n in net.layers:
            a = pool_activation(acts[n], net.pool)  # (n, D)
            t = torch.as_tensor(net.quantizers_[n].thresholds_, dtype=a.dtype)  # (L-1, D)
            level = bank["codes"][n][anchor].long()  # (n, D) target levels
            m = self.margin * bank["scale"][n].to(a.dtype)  # (D,)
            n_thr = t.shape[0]
            lower_t = t[(level - 1).clamp(min=0), torch.arange(t.shape[1])]  # t_{l-1}
            upper_t = t[level.clamp(max=n_thr - 1), torch.arange(t.shape[1])]  # t_l
            # A ReLU cannot go below 0: where t_l - m < 0 only a <= t_l is asked (strict rule a > t).
            ub = torch.where(upper_t - m > 0, upper_t - m, upper_t)
            lo = F.relu(lower_t + m - a) * (level >= 1)
            hi = F.relu(a - ub) * (level <= n_thr - 1)
            match = match + (lo + hi).mean(1)
        cls = classifier_loss(logits, targets, True, self.classifier_loss, self.kappa)
        total = has * match + self.c * cls
        (grad,) = torch.autograd.grad(total.sum(), xa)
        return grad, logits.detach()

    def __repr__(self) -> str:
        return (f"CodeMatching(anchor={self.anchor!r}, margin={self.margin}, c={self.c}, steps={self.steps}, "
                f"distance={self.distance!r}, bank={len(self.bank_images)} images)")
