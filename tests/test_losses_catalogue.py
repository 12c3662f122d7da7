"""Invariants every loss of the catalogue must satisfy (issue 4, "Correctness").

Generic over ``available()``: metadata complete, ``build`` validation, finite values and
gradients in 2D and 3D for batch 1 and 4 and empty / full / single-pixel / blob targets, a
perfect confident prediction scoring lower than a poor one, float32 == float64, half-precision
inputs computed in float32, clear errors for bad inputs. Losses needing ``"features"`` get a
random (B, 8, H/4, W/4) tensor; ``"dataset_stats"`` losses are
fitted on a few random blob masks; ``"epoch"`` losses are moved to epoch 3 of 10.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from napari_segloss.losses import EXTRAS, FAMILIES, LossInfo, SegLoss, available, build, info, signed_distance

CATALOGUE = [
    # pixel
    "bce", "weighted_bce", "balanced_bce", "topk", "focal", "distance_bce",
    # region
    "dice", "iou", "tversky", "focal_tversky", "log_cosh_dice", "sensitivity_specificity",
    "generalized_dice", "gw_dice", "asymmetric_similarity", "penalty_gdice", "lovasz_hinge", "rmi",
    "robust_t", "cmss",
    # boundary
    "boundary", "hausdorff_dt", "boundary_aware", "active_boundary", "inverseform", "conditional_boundary",
    "boundary_dou", "region_wise", "shape_aware",
    # compound
    "combo", "exp_log", "unified_focal", "dice_focal", "dice_topk", "calf", "fess", "dice_simclr", "dice_infonce",
]
KNOWN_NEEDS = {"features", "epoch", "dataset_stats"}
SHAPES = {2: (32, 32), 3: (8, 16, 16)}
NAMES = available()
CASES = [(name, dim) for name in NAMES for dim in (2, 3)]


def _blob(spatial: tuple[int, ...], centre_shift: float = 0.0) -> torch.Tensor:
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in spatial], indexing="ij")
    radius2 = sum(((g - (n - 1) / 2 - centre_shift * n / 8) / (n / 4)) ** 2 for g, n in zip(grids, spatial))
    return (radius2 <= 1.0).double()


def _targets(batch: int, spatial: tuple[int, ...]) -> dict[str, torch.Tensor]:
    shape = (batch, 1, *spatial)
    single = torch.zeros(shape, dtype=torch.float64)
    single[(slice(None), 0, *[n // 3 for n in spatial])] = 1.0
    blob = torch.stack([_blob(spatial, centre_shift=i % 3 - 1.0) for i in range(batch)])[:, None]
    return {"empty": torch.zeros(shape, dtype=torch.float64), "full": torch.ones(shape, dtype=torch.float64),
            "single": single, "blob": blob}


def _extras(meta: LossInfo, batch: int, spatial: tuple[int, ...], seed: int = 0) -> dict[str, Any]:
    """Random features (B, 8, *spatial/4) for the losses that need them."""
    if "features" not in meta.needs:
        return {}
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, 8, *[max(1, n // 4) for n in spatial])
    return {"features": torch.randn(shape, generator=gen, dtype=torch.float64).requires_grad_(True)}


def _prepared(name: str, spatial: tuple[int, ...]) -> SegLoss:
    """``build(name)`` with its declared state hooks applied."""
    loss = build(name)
    meta = info(name)
    if "dataset_stats" in meta.needs:
        masks = [_blob(spatial, centre_shift=s).numpy() > 0 for s in (-1.0, 0.0, 0.5, 1.0)]
        masks += [np.zeros(spatial, bool), np.ones(spatial, bool)]
        masks[0][(0,) * len(spatial)] = True
        loss.fit_dataset(masks)
    if "epoch" in meta.needs:
        loss.on_epoch(3, 10)
    return loss


def _cast(extras: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    return {k: v.detach().to(dtype).requires_grad_(v.requires_grad) for k, v in extras.items()}


def _skip_unsupported(name: str, dim: int) -> None:
    if dim not in info(name).dims:
        pytest.skip(f"{name} is {sorted(info(name).dims)}-D only")


# ---------------------------------------------------------------------------- catalogue / metadata


def test_catalogue_is_exactly_the_38_names_in_order():
    missing = [n for n in CATALOGUE if n not in NAMES]
    extra = [n for n in NAMES if n not in CATALOGUE]
    assert not missing and not extra, f"missing: {missing}; not in the issue: {extra}"
    assert NAMES == CATALOGUE


@pytest.mark.parametrize("name", NAMES)
def test_info_is_complete(name):
    meta = info(name)
    assert isinstance(meta, LossInfo) and meta.name == name
    assert re.fullmatch(r"[a-z][a-z0-9_]*", name)
    assert meta.family in FAMILIES
    assert meta.title.strip() and meta.summary.strip() and meta.notes.strip() and meta.check.strip()
    assert len(meta.summary) <= 200 and "\n" not in meta.summary, "summary: one line a clinician understands"
    assert re.search(r"(19|20)\d\d", meta.reference), "reference needs a year"
    assert re.search(r"arXiv|doi|DOI|10\.\d{4,}/|openreview|https?://", meta.reference), "reference needs arXiv/DOI"
    assert meta.needs <= KNOWN_NEEDS, f"unknown needs {meta.needs - KNOWN_NEEDS}"
    assert meta.dims and meta.dims <= {2, 3}
    assert set(meta.bounds) <= set(meta.defaults), "bounds for a parameter without a default"
    for alias in meta.aliases:
        assert info(alias).name == name, f"alias {alias} resolves to {info(alias).name}"
    loss = build(name)
    assert isinstance(loss, SegLoss) and loss.name == name
    assert build(name, **dict(meta.defaults)).name == name, "explicit defaults are accepted"
    assert set(loss.required_extras) <= meta.needs
    json.dumps(loss.state(), allow_nan=False)  # goes into the model card as strict JSON


def test_names_and_aliases_do_not_collide():
    seen: dict[str, str] = {}
    for name in NAMES:
        for key in (name, *info(name).aliases):
            norm = key.lower().replace("-", "_")
            assert seen.setdefault(norm, name) == name, f"{key} names both {seen[norm]} and {name}"


def test_build_rejects_unknown_names_listing_valid_ones():
    with pytest.raises(ValueError, match="dice"):
        build("no_such_loss")


@pytest.mark.parametrize("name", NAMES)
def test_build_rejects_unknown_and_out_of_range_hparams(name):
    meta = info(name)
    with pytest.raises(ValueError, match="valid"):
        build(name, no_such_hparam=1)
    for key, bound in meta.bounds.items():
        numeric = isinstance(bound, tuple) and len(bound) == 2 and all(
            b is None or (isinstance(b, (int, float)) and not isinstance(b, bool)) for b in bound
        )
        if numeric:
            low, high = bound
            if low is not None:
                with pytest.raises(ValueError):
                    build(name, **{key: low - 1.0})
            if high is not None:
                with pytest.raises(ValueError):
                    build(name, **{key: high + 1.0})
        else:
            with pytest.raises(ValueError):
                build(name, **{key: "__not_a_valid_value__"})


# ---------------------------------------------------------------------------- numerical invariants


@pytest.mark.parametrize("name, dim", CASES)
def test_finite_values_and_gradients(name, dim):
    _skip_unsupported(name, dim)
    spatial = SHAPES[dim]
    loss = _prepared(name, spatial)
    meta = info(name)
    gen = torch.Generator().manual_seed(1)
    for batch in (1, 4):
        extras = _extras(meta, batch, spatial)
        for kind, target in _targets(batch, spatial).items():
            logits = (3.0 * torch.randn((batch, 1, *spatial), generator=gen)).requires_grad_(True)
            fextras = _cast(extras, torch.float32)
            value = loss(logits, target.float(), **fextras)
            assert value.ndim == 0 and value.dtype == torch.float32, f"{kind}, B={batch}: {value.shape} {value.dtype}"
            assert torch.isfinite(value), f"{kind}, B={batch}: value {value}"
            value.backward()
            assert logits.grad is not None and torch.isfinite(logits.grad).all(), f"{kind}, B={batch}: gradient"
            for key, tensor in fextras.items():
                if tensor.requires_grad and tensor.grad is not None:
                    assert torch.isfinite(tensor.grad).all(), f"{kind}, B={batch}: gradient of {key}"
            for param in loss.parameters():
                assert param.grad is None or torch.isfinite(param.grad).all()
            loss.zero_grad()


@pytest.mark.parametrize("name, dim", CASES)
def test_perfect_prediction_beats_poor_one(name, dim):
    _skip_unsupported(name, dim)
    spatial = SHAPES[dim]
    loss = _prepared(name, spatial)
    extras = _extras(info(name), 2, spatial)
    for kind in ("blob", "single"):
        target = _targets(2, spatial)[kind].float()
        sign = 2.0 * target - 1.0
        perfect = loss(8.0 * sign, target, **_cast(extras, torch.float32)).detach()
        poor = loss(-8.0 * sign, target, **_cast(extras, torch.float32)).detach()
        assert float(perfect) < float(poor), f"{kind}: perfect {float(perfect)} >= poor {float(poor)}"


@pytest.mark.parametrize("name, dim", CASES)
def test_float32_and_float64_agree(name, dim):
    _skip_unsupported(name, dim)
    spatial = SHAPES[dim]
    loss = _prepared(name, spatial)
    extras = _extras(info(name), 4, spatial)
    gen = torch.Generator().manual_seed(2)
    logits = 2.0 * torch.randn((4, 1, *spatial), generator=gen, dtype=torch.float64)
    target = _targets(4, spatial)["blob"]
    target[0] = 0.0
    v64 = loss(logits, target, **_cast(extras, torch.float64)).detach()
    v32 = loss(logits.float(), target.float(), **_cast(extras, torch.float32)).detach()
    assert v64.dtype == torch.float64
    assert float(v32) == pytest.approx(float(v64), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_half_precision_logits_are_computed_in_float32(name):
    spatial = SHAPES[2] if 2 in info(name).dims else SHAPES[3]
    loss = _prepared(name, spatial)
    extras = _extras(info(name), 2, spatial)
    gen = torch.Generator().manual_seed(3)
    logits = (2.0 * torch.randn((2, 1, *spatial), generator=gen)).half()
    target = _targets(2, spatial)["blob"].float()
    v16 = loss(logits, target, **_cast(extras, torch.float16)).detach()
    v32 = loss(logits.float(), target, **_cast(extras, torch.float32)).detach()
    assert v16.dtype == torch.float32 and torch.isfinite(v16)
    assert float(v16) == pytest.approx(float(v32), rel=1e-3, abs=1e-4)


# ---------------------------------------------------------------------------- input validation


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_value_error(name):
    spatial = SHAPES[2] if 2 in info(name).dims else SHAPES[3]
    loss = _prepared(name, spatial)
    extras = _cast(_extras(info(name), 2, spatial), torch.float32)
    logits = torch.randn(2, 1, *spatial)
    target = _targets(2, spatial)["blob"].float()
    bad_calls = {
        "two channels": (torch.randn(2, 2, *spatial), torch.cat([target, target], 1)),
        "no channel axis": (logits[:, 0], target[:, 0]),
        "shape mismatch": (logits, target[..., :-1]),
        "NaN logits": (torch.full_like(logits, float("nan")), target),
        "Inf logits": (torch.full_like(logits, float("inf")), target),
        "non-binary target": (logits, 2.0 * target),
        "integer logits": (logits.long(), target),
    }
    for why, (z, y) in bad_calls.items():
        with pytest.raises(ValueError):
            loss(z, y, **extras)
            pytest.fail(f"no ValueError for {why}")
    # integer targets are fine
    assert torch.isfinite(loss(logits, target.long(), **extras))
    if info(name).needs & {"features"}:
        with pytest.raises(ValueError, match="features"):
            loss(logits, target)


# ---------------------------------------------------------------------------- the extras contract


def _every_extra(target: torch.Tensor, spacing: tuple[float, ...], seed: int = 0) -> dict[str, Any]:
    """A valid value for every keyword of ``EXTRAS`` (what a generic caller would pass)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (target.shape[0], 8, *[max(1, n // 4) for n in target.shape[2:]])
    sdf = np.stack([signed_distance(m, spacing) for m in target[:, 0].numpy() > 0.5])[:, None]
    return {"target_dist": torch.from_numpy(sdf), "spacing": spacing,
            "features": torch.randn(shape, generator=gen, dtype=torch.float64),
            "features2": torch.randn(shape, generator=gen, dtype=torch.float64)}


@pytest.mark.parametrize("name, dim", CASES)
def test_every_loss_takes_every_extra_and_ignores_those_it_does_not_use(name, dim):
    _skip_unsupported(name, dim)
    spatial = SHAPES[dim]
    loss = _prepared(name, spatial)
    assert set(loss.required_extras) <= loss.uses <= set(EXTRAS)
    assert ("features" in loss.uses) == ("features" in info(name).needs)
    target = _targets(2, spatial)["blob"]
    logits = torch.randn(target.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    spacing = (1.5, 0.75, 0.75)[-dim:]
    every = _every_extra(target, spacing)
    value = loss(logits, target, **every)
    assert torch.isfinite(value)
    torch.testing.assert_close(value, loss(logits, target, **{k: v for k, v in every.items() if k in loss.uses}))
    # an unused extra is not even looked at; None is "not given"
    junk = {key: "not a tensor" for key in EXTRAS if key not in loss.uses}
    torch.testing.assert_close(loss(logits, target, **{**every, **junk}), value)
    if not loss.required_extras:
        torch.testing.assert_close(loss(logits, target, **dict.fromkeys(EXTRAS)), loss(logits, target))


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_rejects_an_unknown_keyword_the_same_way(name):
    spatial = SHAPES[min(info(name).dims)]
    loss = _prepared(name, spatial)
    target = _targets(1, spatial)["blob"]
    for key in ("head_weight", "epoch", "target_distance"):
        with pytest.raises(ValueError, match=rf"^{name}: unknown input\(s\) \['{key}'\]; a loss takes only"):
            loss(torch.zeros_like(target), target, **{key: 1}, **_extras(info(name), 1, spatial))


@pytest.mark.parametrize("name", NAMES)
def test_uses_declares_exactly_the_keywords_compute_names(name):
    """``uses`` is what callers read instead of the signature: it must not drift from ``compute``."""
    loss = build(name)
    params = inspect.signature(loss.compute).parameters.values()
    assert not any(p.kind is p.VAR_KEYWORD for p in params), "compute must name its extras"
    assert {p.name for p in params} - {"logits", "target"} == loss.uses


@pytest.mark.parametrize("name", [n for n in NAMES if 3 not in info(n).dims])
def test_2d_only_losses_reject_volumes_clearly(name):
    loss = build(name)
    with pytest.raises(ValueError):
        loss(torch.randn(1, 1, *SHAPES[3]), torch.zeros(1, 1, *SHAPES[3]), **_cast(_extras(info(name), 1, SHAPES[3]), torch.float32))


def test_docs_table_is_generated_and_up_to_date():
    """docs/losses.md is exactly what scripts/make_loss_table.py generates from info()."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "make_loss_table.py"
    spec = importlib.util.spec_from_file_location("make_loss_table", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bench = json.loads(module.DEFAULT_BENCH.read_text()) if module.DEFAULT_BENCH.exists() else {}
    text = module.render(bench)
    assert all(f"| `{name}` |" in text for name in NAMES)
    assert module.DEFAULT_OUT.exists() and module.DEFAULT_OUT.read_text() == text, (
        "docs/losses.md is out of date: run python scripts/make_loss_table.py"
    )
