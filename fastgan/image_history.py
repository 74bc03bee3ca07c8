"""A history buffer of generated images (Shrivastava et al. 2017; CycleGAN's image pool), on the device.

CycleGAN updates each discriminator on a mix of the newest generated images
and older ones, which damps oscillation. The reference keeps a Python list
and flips a Python coin per image. Here the buffer is a fixed-size device
tensor and every decision is a device-side ``torch.where`` on numbers drawn
from the step's ``torch.Generator``, so :meth:`ImageHistory.query` has no host
sync and no data-dependent shape: a CUDA graph can capture it. The rule, per
image of the batch, in order:

- while the buffer is not full, the image is stored in the next free slot and
  returned unchanged;
- once full, with probability 1/2 a uniformly chosen stored image is returned
  and the new image takes its slot; otherwise the new image is returned and
  the buffer is left as it is.

The buffer and its fill count are plain tensors, saved in checkpoints, so a
resumed run continues with the same history.
"""

from __future__ import annotations

import torch


class ImageHistory:
    """A pool of up to ``size`` generated images of one shape, on ``device``.

    Args:
        size: images kept (0: :meth:`query` returns its input).
        shape: the shape of one image, (C, H, W).
        device: where the buffer lives.
        dtype: the buffer's dtype (images are stored in it and returned in their own).
    """

    def __init__(self, size: int, shape: tuple[int, ...], device: torch.device | str,
                 dtype: torch.dtype = torch.float32):
        if size < 0:
            raise ValueError(f"history size must be >= 0, got {size}")
        self.size = int(size)
        self.images = torch.zeros((self.size, *shape), device=device, dtype=dtype)   # (P, C, H, W)
        self.count = torch.zeros((), device=device, dtype=torch.long)                # slots filled so far

    def query(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Store the batch's images and return what D should see (capturable: no host sync).

        Args:
            batch: (B, C, H, W) generated images (detached).
            generator: the step's generator (two draws per image: a coin and a slot).

        Returns:
            (B, C, H, W): each image, or the stored image it replaced.
        """
        if self.size == 0:
            return batch
        n = batch.shape[0]
        coin = torch.rand(n, generator=generator, device=batch.device)                      # (B,)
        slot = torch.randint(0, self.size, (n,), generator=generator, device=batch.device)  # (B,)
        out = []
        for i in range(n):   # in order: a later image may land in the slot an earlier one filled
            filling = self.count < self.size                                                # 0-dim bool
            swap = ~filling & (coin[i] > 0.5)
            where = torch.where(filling, self.count, slot[i]).reshape(1)                     # (1,)
            old = self.images.index_select(0, where)                                        # (1, C, H, W)
            new = batch[i:i + 1].to(self.images.dtype)
            out.append(torch.where(swap, old, new))
            self.images.index_copy_(0, where, torch.where(filling | swap, new, old))
            self.count.add_(filling.long())
        return torch.cat(out).to(batch.dtype)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The stored images and the fill count (CPU copies)."""
        return {"images": self.images.detach().cpu(), "count": self.count.detach().cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`'s tensors in place (captured graphs keep their addresses).

        Args:
            state: ``{"images": ..., "count": ...}``.
        """
        if tuple(state["images"].shape) != tuple(self.images.shape):
            raise ValueError(f"history buffer of shape {tuple(state['images'].shape)} does not fit "
                             f"{tuple(self.images.shape)}")
        self.images.copy_(state["images"])
        self.count.copy_(state["count"])
