"""The part of data-parallel training that ``DistributedDataParallel`` does not do: the loss's parameters.

DDP averages the gradients of the module it wraps, the network. A loss with learnable
parameters (``robust_t``'s degrees of freedom ``nu``) lives outside it, so without help every rank
would step those parameters with the gradient of its own shard of the batch and the ranks'
copies of the loss would drift apart (and the card, written by rank 0, would record only one
of them). :func:`average_gradients` gives them DDP's treatment. Their initial values need no
broadcast: every rank builds the loss from the same hyper-parameters (or resume state).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def average_gradients(params: Sequence[torch.nn.Parameter], world: int) -> None:
    """Replace each parameter's gradient by its mean over the ``world`` ranks (in place).

    Call it on every rank after ``backward()`` and before the optimiser step, with the same
    parameters in the same order. A parameter without a gradient on a rank counts as a zero
    gradient there. A no-op for ``world <= 1`` (torch.distributed need not be initialised).
    """
    if world <= 1 or not params:
        return
    import torch.distributed as dist

    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
        param.grad.div_(world)
