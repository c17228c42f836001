"""What both trainers share about item counts: the normalisation over the accumulated, global batch, and the loss
components averaged over a logging interval across processes (what `Trainer.log` shows as ``loss/<name>``).

One convention: a term is a sum over a micro-batch's items divided by `process_denominators` of its kind, the item
count of the whole accumulated batch over all processes divided by the number of processes (DDP averages gradients
over processes, so each process's share of the global mean is scaled up by their number).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def accumulated_counts(accelerator, per_batch: Sequence[torch.Tensor], device) -> torch.Tensor:
    """Item counts (one tensor of kinds per micro-batch) summed over the micro-batches of one optimizer step and over
    processes; every process must call it (it may reduce)."""
    totals = torch.stack([counts.to(device).float() for counts in per_batch]).sum(0)
    if accelerator.num_processes > 1:
        totals = accelerator.reduce(totals, reduction="sum")
    return totals


def process_denominators(accumulated: torch.Tensor, num_processes: int) -> torch.Tensor:
    """What a process divides its item sums by (see the module docstring)."""
    return accumulated.clamp_min(1.0) / num_processes


class ComponentAverager:
    """Accumulates, per component, a loss summed over items and the number of items, until the next log.

    Each component is averaged over the items of the steps that computed it, so a component present on some steps
    only (alternating mode's exit loss) is not diluted by the steps without it.
    """

    def __init__(self):
        self._sums: dict[str, torch.Tensor] = {}
        self._items: dict[str, torch.Tensor] = {}

    def add(self, name: str, loss_sum: torch.Tensor, items: torch.Tensor) -> None:
        loss_sum, items = loss_sum.detach().float(), torch.as_tensor(items).detach().float()
        self._sums[name] = self._sums[name] + loss_sum if name in self._sums else loss_sum
        self._items[name] = self._items[name] + items.to(loss_sum.device) if name in self._items else items

    def pop_means(self, accelerator, device) -> dict[str, float]:
        """The means since the last call, summed over processes; every process must call it (it may reduce)."""
        if not self._sums:
            return {}
        names = sorted(self._sums)
        totals = torch.stack([torch.stack([self._sums[n].to(device), self._items[n].to(device)]) for n in names])
        if accelerator.num_processes > 1:
            totals = accelerator.reduce(totals, reduction="sum")
        self._sums, self._items = {}, {}
        return {
            f"loss/{name}": total / items if items > 0 else 0.0 for name, (total, items) in zip(names, totals.tolist())
        }
