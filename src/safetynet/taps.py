"""Read named layers of a model with forward hooks (batched; no gradient unless asked).

``with LayerTap(model, ["layer3.2.relu"]) as tap: logits = model(x); acts = tap.outputs``
gives each named module's output of that forward pass. Hooks are removed on exit, also on error.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from .errors import InputError


def resolve_layers(model: nn.Module, layers: Sequence[str] | str) -> tuple[str, ...]:
    """Check that every name is a submodule of ``model``; the error lists the tappable names."""
    names = (layers,) if isinstance(layers, str) else tuple(layers)
    if not names:
        raise InputError("give at least one layer name to tap")
    known = dict(model.named_modules())
    missing = [n for n in names if n not in known]
    if missing:
        hint = getattr(model, "late_relus", None) or [n for n, m in known.items() if isinstance(m, nn.ReLU)][-8:]
        raise InputError(f"model has no layer named {missing}; late ReLU layers you can tap: {list(hint)}")
    return names


class LayerTap:
    """Context manager recording the outputs of named modules during forward passes."""

    def __init__(self, model: nn.Module, layers: Sequence[str] | str) -> None:
        self.model = model
        self.layers = resolve_layers(model, layers)
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> "LayerTap":
        for name in self.layers:
            module = self.model.get_submodule(name)
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        def hook(_module: nn.Module, _inputs, output: torch.Tensor) -> None:
            self.outputs[name] = output

        return hook

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def forward_with_taps(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward pass returning ``(logits, {layer: activation})``; keeps the autograd graph."""
    with LayerTap(model, layers) as tap:
        logits = model(x)
    return logits, dict(tap.outputs)


@torch.no_grad()
def extract_activations(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | str, batch_size: int = 256,
                        flatten: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Batched no-grad extraction; returns ``(logits (N, K), {layer: (N, D) or (N, C, H, W)})``.

    The model is put in eval mode for the pass and restored afterwards.
    """
    names = resolve_layers(model, layers)
    was_training = model.training
    model.eval()
    logits_parts: list[torch.Tensor] = []
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    try:
        for i in range(0, x.shape[0], batch_size):
            logits, acts = forward_with_taps(model, x[i:i + batch_size], names)
            logits_parts.append(logits)
            for n in names:
                a = acts[n]
                parts[n].append(a.flatten(1) if flatten else a)
    finally:
        model.train(was_training)
    if not logits_parts:
        raise InputError("no images given: x has 0 rows")
    return torch.cat(logits_parts), {n: torch.cat(v) for n, v in parts.items()}


def iter_batches(n: int, batch_size: int) -> Iterable[slice]:
    for i in range(0, n, batch_size):
        yield slice(i, min(i + batch_size, n))
