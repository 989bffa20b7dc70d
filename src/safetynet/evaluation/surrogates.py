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

__all__ = ["SurrogatePool", "craft_adversarials", "finetune_with_adversarial_class", "fit_subnet_detector", "train_surrogate"]


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
    from ..attacks.batched import attack_in_batches

    res = attack_in_batches(BIM(steps=steps, step_size=2.5 * eps / steps, mask=mask), model, x, y, eps=eps,
                            batch_size=batch_size)
    return res.clipped, res.success


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


class _Surrogate:
    """One transfer surrogate and what is derived from it, each built on first use."""

    def __init__(self, pool: SurrogatePool, tag: str, kind: str, value: Any, index: int) -> None:
        self.pool, self.tag, self.kind, self.value, self.index = pool, tag, kind, value, index
        self._model: nn.Module | None = None
        self._adv: torch.Tensor | None = None
        self._finetuned: nn.Module | None = None
        self._subnet: Any = None

    def model(self) -> nn.Module:
        if self._model is None:
            from ..models import load_checkpoint
            from ..attacks.batched import predict

            pool = self.pool
            if self.kind == "module":
                model = self.value
                info: dict[str, Any] = {"source": f"given with the task ({self.tag})", "arch": type(model).__name__}
            elif self.kind == "model":
                model, meta = load_checkpoint(self.value)
                tc = meta.get("train_config") or {}
                info = {"source": self.value, "arch": meta.get("model", {}).get("arch"), "seed": tc.get("seed"),
                        "epochs": tc.get("epochs"), "test_acc": (meta.get("metrics") or {}).get("test_acc")}
            else:
                if pool.train_dataset is None:
                    raise InputError(f"the {pool.task_name} task has no training split to train a surrogate on; "
                                     "give --surrogate-model or drop the transfer attacks")
                arch = self.value or pool.target_arch or "smallcnn"
                seed = pool.trained_seed(self.index)
                sub = "surrogate" if len(pool.surrogates) == 1 else f"surrogate-{self.tag}"
                model, metrics = train_surrogate(arch, seed, dataset=pool.train_dataset, out=pool.out / sub,
                                                 epochs=pool.epochs, data_dir=pool.data_dir)
                info = {"source": "trained for this run", "arch": arch, "seed": seed, "epochs": pool.epochs,
                        "test_acc": metrics.get("test_acc")}
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            # Transfer rates mean little without the surrogate's own accuracy on the attacked images.
            pred, _ = predict(model, pool.x_test, pool.batch_size)
            info["attacked_images_accuracy"] = float((pred == pool.y_test).float().mean())
            pool.info[self.tag] = info
            self._model = model
        return self._model

    def adversarials(self) -> torch.Tensor:
        """Successful BIM-L∞ adversarials of the fit images on this surrogate (its detectors' training data)."""
        if self._adv is None:
            pool = self.pool
            adv, ok = craft_adversarials(self.model(), pool.x_nat, pool.y_nat, pool.fit_eps, batch_size=pool.batch_size,
                                         mask=pool.mask)
            if ok.sum() < 10:
                raise InputError(f"BIM fooled surrogate {self.tag} on only {int(ok.sum())} fit images; raise fit_eps")
            self._adv = adv[ok]
        return self._adv

    def finetuned(self) -> nn.Module:
        """"Finetune TF": the surrogate with an extra adversarial class."""
        if self._finetuned is None:
            self._finetuned = finetune_with_adversarial_class(self.model(), self.pool.x_nat, self.pool.y_nat,
                                                              self.adversarials(), seed=self.pool.seed)
        return self._finetuned

    def subnet(self) -> Any:
        """"Subnet Det TF": a Metzen subnetwork on the surrogate's last late layer."""
        if self._subnet is None:
            late = list(getattr(self.model(), "late_relus", ()) or ())
            if not late:
                raise InputError(f"surrogate {self.tag} has no late_relus to attach a subnetwork detector to")
            self._subnet = fit_subnet_detector(self.model(), self.pool.x_nat, self.adversarials(), layer=late[-1],
                                               epochs=self.pool.metzen_epochs, seed=self.pool.seed)
        return self._subnet


class SurrogatePool:
    """The transfer surrogates of a run, keyed by a short tag; each is built (loaded, trained) on first use.

    ``specs`` lists ``(kind, value)``: ``("module", nn.Module)`` given with the task,
    ``("model", folder)`` a checkpoint, ``("arch", name)`` trained for the run on
    ``train_dataset`` (``""``: the target's architecture, another seed).
    """

    def __init__(self, specs: list[tuple[str, Any]], *, x_nat: torch.Tensor, y_nat: torch.Tensor, x_test: torch.Tensor,
                 y_test: torch.Tensor, fit_eps: float, seed: int, out: Path, task_name: str, target_arch: str | None,
                 train_dataset: str | None, data_dir: str | None = None, epochs: int = 4, metzen_epochs: int = 10,
                 batch_size: int = 256, mask: torch.Tensor | None = None) -> None:
        self.x_nat, self.y_nat, self.x_test, self.y_test = x_nat, y_nat, x_test, y_test
        self.fit_eps, self.seed, self.out, self.task_name = fit_eps, seed, Path(out), task_name
        self.target_arch, self.train_dataset, self.data_dir = target_arch, train_dataset, data_dir
        self.epochs, self.metzen_epochs, self.batch_size, self.mask = epochs, metzen_epochs, batch_size, mask
        self.info: dict[str, dict[str, Any]] = {}  # tag -> provenance, filled when a surrogate is built
        self.tags = self._tags(specs)
        self.surrogates = {tag: _Surrogate(self, tag, kind, value, i)
                           for i, (tag, (kind, value)) in enumerate(zip(self.tags, specs))}

    def __getitem__(self, tag: str) -> _Surrogate:
        return self.surrogates[tag]

    def trained_seed(self, index: int) -> int:
        """Seed of the ``index``-th surrogate trained for the run (never the target's own seed)."""
        return self.seed + 1 + index

    def _tags(self, specs: list[tuple[str, Any]]) -> list[str]:
        """Short, unique names: ``<arch>-seed<seed>`` where known, else the folder or given name."""
        from ..models.checkpoint import read_checkpoint_config

        tags: list[str] = []
        for i, (kind, value) in enumerate(specs):
            if kind == "module":
                tag = "bundle-surrogate"
            elif kind == "model":
                meta = read_checkpoint_config(value)
                arch = (meta.get("model") or {}).get("arch")
                seed = (meta.get("train_config") or {}).get("seed")
                tag = f"{arch}-seed{seed}" if arch and seed is not None else Path(value).name
            else:
                tag = f"{value or self.target_arch or 'smallcnn'}-seed{self.trained_seed(i)}"
            while tag in tags:
                tag += "'"
            tags.append(tag)
        return tags
