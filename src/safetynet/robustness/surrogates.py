"""Surrogate networks for transfer (black-box) attacks, as in the SafetyNet paper's Table 4.

Lu, Issaranon, Forsyth (ICCV 2017), sec. 3: "we follow [Papernot et al.] by building attacks on
various alternative networks, then transferring these network's adversarial samples":

* a plain surrogate classifier (another architecture or seed), :func:`train_surrogate`
  ("FastSign TF", "GradDesc TF");
* "Finetune TF": the surrogate fine-tuned with adversarial examples labelled as an extra class,
  :func:`finetune_with_adversarial_class` (our multi-class version of "labelled false");
* "Subnet Det TF": the surrogate plus a Metzen et al. detector subnetwork fitted on its own
  adversarials, attacked jointly, :func:`fit_subnet_detector`.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_images, check_labels, check_positive
from ..errors import InputError

log = logging.getLogger(__name__)

__all__ = ["craft_adversarials", "finetune_with_adversarial_class", "fit_subnet_detector", "train_surrogate"]


def train_surrogate(arch: str, seed: int, *, dataset: str, out: str | Path, epochs: int = 4, lr: float = 0.05,
                    batch_size: int = 64, data_dir: str | None = None, augment: bool | None = None
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """Train (or resume, or reuse a finished) classifier in ``out``; returns ``(model in eval mode, metrics)``.

    A thin wrapper over :func:`safetynet.train.train`; re-running with the same arguments after
    it finished only reloads the checkpoint.
    """
    from ..models import load_checkpoint
    from ..train import train
    from ..train_config import TrainConfig

    out = Path(out)
    cfg = TrainConfig(dataset=dataset, data_dir=data_dir, arch=arch, epochs=epochs, lr=lr, batch_size=batch_size,
                      augment=(dataset != "digits") if augment is None else augment, seed=seed, out=str(out))
    metrics = train(cfg)
    model, meta = load_checkpoint(out)
    model.eval()
    return model, metrics or dict(meta.get("metrics", {}))


def _last_linear(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """(parent module, attribute name, layer) of the model's last ``nn.Linear`` (its classifier head)."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    if found is None:
        raise InputError("the surrogate has no nn.Linear classifier head to extend with an extra class")
    name, layer = found
    parent_name, _, attr = name.rpartition(".")
    return model.get_submodule(parent_name) if parent_name else model, attr, layer


def craft_adversarials(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 10,
                       batch_size: int = 256, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BIM-L∞ adversarials of ``x`` on ``model`` (changing only where ``mask`` is 1); returns ``(clipped images, success)``."""
    from ..attacks import BIM

    attack = BIM(steps=steps, step_size=2.5 * eps / steps, mask=mask)
    advs, oks = [], []
    for i in range(0, len(x), batch_size):
        _, adv, ok = attack(model, x[i:i + batch_size], y[i:i + batch_size], eps=eps)
        advs.append(adv)
        oks.append(ok)
    return torch.cat(advs), torch.cat(oks)


def finetune_with_adversarial_class(model: nn.Module, natural: torch.Tensor, labels: torch.Tensor,
                                    adversarials: torch.Tensor, *, epochs: int = 3, lr: float = 0.01,
                                    batch_size: int = 64, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with K+1 outputs, fine-tuned on natural images (their labels) and adversarials (label K).

    The head keeps the K trained rows and gains a zero-initialised row for the "adversarial"
    class; every parameter is then fine-tuned with SGD (momentum 0.9) on the shuffled union.
    ``model`` itself is not modified. Use :class:`~safetynet.attacks.undetected.ExtraClassDetector`
    for the rejection and :class:`~safetynet.attacks.transfer.DropExtraClass` for the K-class view.
    """
    check_images(natural, "natural")
    check_images(adversarials, "adversarials")
    labels = check_labels(labels, len(natural))
    if len(adversarials) == 0:
        raise InputError("finetune_with_adversarial_class needs at least one adversarial example")
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    check_positive(lr, "lr")
    net = copy.deepcopy(model)
    parent, attr, head = _last_linear(net)
    k = head.out_features
    new = nn.Linear(head.in_features, k + 1, bias=head.bias is not None).to(head.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:k] = head.weight
        if head.bias is not None:
            new.bias.zero_()
            new.bias[:k] = head.bias
    setattr(parent, attr, new)
    for p in net.parameters():
        p.requires_grad_(True)
    x = torch.cat([natural, adversarials])
    y = torch.cat([labels, torch.full((len(adversarials),), k, dtype=torch.long)])
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            if len(idx) < 2:  # batch norm cannot normalise one example
                continue
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def fit_subnet_detector(model: nn.Module, natural: torch.Tensor, adversarial: torch.Tensor, *, layer: str,
                        epochs: int = 10, seed: int = 0, **kwargs: Any) -> Any:
    """A Metzen et al. subnetwork on ``layer`` of the surrogate ``model``, natural (0) vs adversarial (1)."""
    from ..detectors.metzen import MetzenDetector

    return MetzenDetector(model, layer=layer, epochs=epochs, seed=seed, **kwargs).fit(natural, adversarial)
