"""The loss catalogue: pixel, region, boundary and compound segmentation losses.

Conventions (applied by every loss in this package):

* Input: ``logits`` float ``(B, 1, H, W)`` or ``(B, 1, D, H, W)`` -- one foreground logit per
  pixel, never probabilities -- and ``target`` of the same shape with values in {0, 1}.
  NaN/Inf logits, mismatched shapes and missing required extras raise ``ValueError``.
* Region losses are computed per image (sums over spatial axes) and averaged over the batch.
* Smoothing ``smooth=1e-5`` on numerator and denominator.
* One foreground channel unless a loss is defined over classes; then ``P = [1 - p, p]``.
* Tversky family: ``alpha`` weights false positives, ``beta`` false negatives (0.3 / 0.7).
* Focal: ``alpha`` weights the positive class (0.25), ``gamma = 2``.
* Losses compute in float32 even when the model runs in half precision.
* Extras: every loss takes the same optional keywords, :data:`EXTRAS` (``target_dist``,
  ``spacing``, ``features``, ``features2``), uses those in its ``uses`` and ignores the others;
  any other keyword raises ``ValueError``. Distance maps are spacing-aware (``spacing=`` in mm)
  and computed from the target when not passed in (``target_dist=``, :func:`signed_distance`,
  lets a data loader precompute them).
* State: ``loss.on_epoch(epoch, total_epochs)`` for schedules, ``loss.fit_dataset(masks)`` for
  dataset statistics, ``loss.state()`` for the model card; learnable parameters are ordinary
  ``nn.Parameter`` s, so ``loss.parameters()`` goes to the optimiser.

API: :func:`available`, :func:`info`, :func:`build`, :data:`EXTRAS`, :func:`signed_distance`.
"""

from napari_segloss.losses._distance import signed_distance
from napari_segloss.losses._registry import FAMILIES, LossInfo, available, build, info, resolve
from napari_segloss.losses.base import EXTRAS, SegLoss

# Family modules register their losses on import, in catalogue order.
from napari_segloss.losses import pixel, region, boundary, compound  # noqa: E402,F401  isort: skip

__all__ = ["EXTRAS", "FAMILIES", "LossInfo", "SegLoss", "available", "build", "info", "resolve", "signed_distance"]
