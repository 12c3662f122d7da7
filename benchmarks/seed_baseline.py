"""The seed Streamlit tool's inference path, rebuilt from its description: the benchmark's baseline.

The seed tool (``/work/shared/seeds/000_*``; its FPN is described in issue 10) segments one image
at a time:

1. pre-processing: PIL grayscale (8-bit ``"L"``), resize to 256x256, scale to [0, 1] and
   normalise with mean 0.5 / std 0.5;
2. model: a ResNet-style FPN (:class:`SeedFPN`): conv 7x7/2 and max-pool, four bottleneck
   stages ([2, 2, 2, 2] blocks of 64/128/256/512 planes, expansion 4), lateral 1x1 convs to 256
   channels, top-down bilinear upsample-add, one 3x3 smoothing conv on P2, a 1x1 head and a
   bilinear upsample to the input size (15.5 M parameters, :data:`SEED_PARAMETERS`);
3. the probability is resized back to the image's size (PIL, bilinear) and thresholded at 0.5;
4. metrics: Dice and IoU (NumPy);
5. overlays in the PIL/OpenCV style: a jet heatmap blended 50/50 over the image, mask and truth
   outlines from an edge filter, and a TP/FP/FN colour blend.

Nothing here is part of the plugin; ``bench_compare.py`` times it next to the engine. Weights
are random (speed does not depend on them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image, ImageFilter
from torch import nn

#: the seed tool's network input side in pixels
SEED_SIZE = 256
#: trainable parameters of :class:`SeedFPN` with one input channel and one class (the seed's 15.5 M)
SEED_PARAMETERS = 15_514_305


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce, 3x3 (carries the stride), 1x1 expand x4, projection shortcut.

    ``(B, in_planes, H, W) -> (B, 4 * planes, H / stride, W / stride)``.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class SeedFPN(nn.Module):
    """The seed tool's FPN: bottleneck ResNet trunk, 256-channel pyramid, prediction from P2.

    ``(B, in_channels, H, W)`` float -> ``(B, classes, H, W)`` logits (H, W multiples of 32).
    """

    def __init__(self, blocks: tuple[int, int, int, int] = (2, 2, 2, 2), in_channels: int = 1, classes: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self._in_planes = 64
        self.layer1 = self._stage(64, blocks[0], stride=1)
        self.layer2 = self._stage(128, blocks[1], stride=2)
        self.layer3 = self._stage(256, blocks[2], stride=2)
        self.layer4 = self._stage(512, blocks[3], stride=2)
        expansion = Bottleneck.expansion
        self.laterals = nn.ModuleList(nn.Conv2d(expansion * planes, 256, 1) for planes in (64, 128, 256, 512))
        self.smooth = nn.Conv2d(256, 256, 3, padding=1)
        self.head = nn.Conv2d(256, classes, 1)

    def _stage(self, planes: int, count: int, stride: int) -> nn.Sequential:
        layers = []
        for block_stride in [stride] + [1] * (count - 1):
            layers.append(Bottleneck(self._in_planes, planes, block_stride))
            self._in_planes = planes * Bottleneck.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        c2 = self.layer1(c1)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        p = self.laterals[3](c5)
        for lateral, c in zip(self.laterals[2::-1], (c4, c3, c2)):
            p = F.interpolate(p, size=c.shape[-2:], mode="bilinear", align_corners=False) + lateral(c)
        logits = self.head(self.smooth(p))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_seed_model(seed: int = 0) -> SeedFPN:
    """A randomly initialised :class:`SeedFPN` (1 channel, 1 class) in eval mode; checks the parameter count."""
    torch.manual_seed(seed)
    model = SeedFPN().eval()
    count = count_parameters(model)
    if count != SEED_PARAMETERS:
        raise RuntimeError(f"SeedFPN has {count} parameters, the seed's network {SEED_PARAMETERS}")
    return model


def load_seed_model(path: str | Path) -> SeedFPN:
    """The seed's model switch: build the network and read its state dict from a ``.pt`` file (no cache)."""
    model = SeedFPN()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def to_8bit(image: np.ndarray) -> np.ndarray:
    """What the seed's PNG/JPG input holds: an 8-bit image (min-max scaled when it is not uint8)."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return arr
    arr = arr.astype(np.float32)
    low, high = float(arr.min()), float(arr.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.rint((arr - low) * scale).astype(np.uint8)


def preprocess(image: np.ndarray) -> torch.Tensor:
    """PIL grayscale, bilinear resize to 256x256, [0, 1], mean/std 0.5: ``(1, 1, 256, 256)`` float32."""
    pil = Image.fromarray(to_8bit(image)).convert("L").resize((SEED_SIZE, SEED_SIZE), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0)
    return ((x - 0.5) / 0.5)[None, None]


def predict(model: nn.Module, image: np.ndarray) -> np.ndarray:
    """Foreground probability of one ``(H, W)`` (or ``(H, W, 3)``) image: float32 ``(H, W)`` in [0, 1]
    (the model runs on the device its parameters are on)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        prob = torch.sigmoid(model(preprocess(image).to(device)))[0, 0].cpu().numpy()
    height, width = np.asarray(image).shape[:2]
    return np.asarray(Image.fromarray(prob).resize((width, height), Image.BILINEAR), dtype=np.float32)


def dice_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """The seed's two scores: ``(Dice, IoU)`` of two boolean masks (NaN when both are empty)."""
    inter = float(np.logical_and(pred, truth).sum())
    total = float(pred.sum() + truth.sum())
    union = total - inter
    return (2 * inter / total if total else float("nan")), (inter / union if union else float("nan"))


def heatmap_overlay(image_rgb: Image.Image, prob: np.ndarray) -> np.ndarray:
    """Jet colour map of the probability blended 50/50 over the image (cv2.applyColorMap + addWeighted)."""
    jet = (colormaps["jet"](prob)[..., :3] * 255).astype(np.uint8)
    return np.asarray(Image.blend(image_rgb, Image.fromarray(jet), 0.5))


def contour_overlay(image_rgb: Image.Image, pred: np.ndarray, truth: np.ndarray | None) -> np.ndarray:
    """Prediction outline in red (and truth in green) over the image (cv2.findContours + drawContours)."""
    out = np.array(image_rgb)
    for mask, colour in ((truth, (0, 255, 0)), (pred, (255, 0, 0))):
        if mask is not None:
            edges = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.FIND_EDGES)) > 0
            out[edges] = colour
    return out


def difference_overlay(image_rgb: Image.Image, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """TP green, FP red, FN blue, blended 50/50 over the image."""
    colour = np.zeros((*pred.shape, 3), dtype=np.uint8)
    colour[pred & truth] = (0, 255, 0)
    colour[pred & ~truth] = (255, 0, 0)
    colour[~pred & truth] = (0, 0, 255)
    return np.asarray(Image.blend(image_rgb, Image.fromarray(colour), 0.5))


@dataclass
class SeedResult:
    """One image through the seed path: probability and mask ``(H, W)``, Dice/IoU, three RGB overlays."""

    probability: np.ndarray
    mask: np.ndarray
    dice: float
    iou: float
    overlays: dict[str, np.ndarray]


def run_image(model: nn.Module, image: np.ndarray, truth: np.ndarray | None = None) -> SeedResult:
    """The seed tool's whole per-image path: pre-processing, model, threshold, metrics, overlays."""
    prob = predict(model, image)
    mask = prob >= 0.5
    image_rgb = Image.fromarray(to_8bit(image)).convert("RGB")
    overlays = {"heatmap": heatmap_overlay(image_rgb, prob), "contours": contour_overlay(image_rgb, mask, truth)}
    dice = iou = float("nan")
    if truth is not None:
        truth = np.asarray(truth) != 0
        dice, iou = dice_iou(mask, truth)
        overlays["difference"] = difference_overlay(image_rgb, mask, truth)
    return SeedResult(prob, mask, dice, iou, overlays)
