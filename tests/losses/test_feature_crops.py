"""The released code's within-modal pairs and loss scale, against an independent reference.

The reference below is written from the authors' released ``main_stica.py`` (``gdt_loss``,
``nce_crop_losses_dual`` and the training loop's loss), as plain loops over crop lists, with
every key detached as there. The batched implementation must agree to 1e-5.
"""

import pytest
import torch
import torch.nn.functional as F

from stica.config import ConfigError, load_section
from stica.losses import official_crop_loss, official_terms, stica_loss

TAU_VV, TAU_VA = 0.5, 0.1
B, E = 6, 8

# (space_medium, space_small, time_medium, time_small) -> released-code term count
VARIANTS = {
    "paper best: space 2x6^2 + 4x4^2, time 2x3 + 1x2": ((2, 4, 2, 1), 12),
    "Table 1b: 1x6^2 + 2x4^2": ((1, 2, 0, 0), 2),
    "Table 1b: 1x6^2 + 2x4^2, time 2x3 + 1x2": ((1, 2, 2, 1), 5),
    "space only: 2x6^2 + 4x4^2": ((2, 4, 0, 0), 9),
    "time only: 2x3 + 1x2": ((0, 0, 2, 1), 3),
    "two medium crops only": ((2, 0, 0, 0), 1),
}
GROUPS = ("space_medium", "space_small", "time_medium", "time_small")


# ---- the reference: the released code's formulas, one crop at a time ----------------------------


def ref_nce(query, key, tau):
    """gdt_loss's building block: keys (local; no other ranks here) are detached."""
    logits = query @ key.detach().t() / tau
    return F.cross_entropy(logits, torch.arange(len(query)))


def ref_gdt_loss(feat_v, feat_a, tau, symmetric=True):
    loss_av = ref_nce(feat_a, feat_v, tau)  # audio (second argument) queries the video keys
    if not symmetric:
        return loss_av
    return 0.5 * (loss_av + ref_nce(feat_v, feat_a, tau))


def ref_crop_losses(c1, c2, s_large, s_small, t_large, t_small, tau):
    """nce_crop_losses_dual: c1/c2 are lists per group of (B, E) crops of RGB crops 1 and 2."""
    total, counter = torch.zeros((), dtype=torch.float64), 0
    if s_small > 0 or s_large > 1:
        for i in range(s_large):
            large_crop = c1["space_medium"][i]
            if i == 1:
                total = total + ref_gdt_loss(c2["space_medium"][i], large_crop, tau)
                counter += 1
            for j in range(s_small):
                small_crop = c2["space_small"][j]
                total = total + ref_gdt_loss(large_crop.detach(), small_crop, tau, symmetric=False)
                counter += 1
    if t_small > 0 or t_large > 1:
        for ti in range(t_large):
            large_tcrop = c1["time_medium"][ti]
            if ti == 1:
                total = total + ref_gdt_loss(c2["time_medium"][ti], large_tcrop, tau)
                counter += 1
            for tj in range(t_small):
                small_tcrop = c2["time_small"][tj]
                total = total + ref_gdt_loss(
                    large_tcrop.detach(), small_tcrop, tau, symmetric=False
                )
                counter += 1
    return total, counter


def ref_total_loss(v1, v2, a, c1, c2, counts):
    """The training loop: 0.5 * mean crop loss + 0.5 * 0.5 * (gdt(v1, a) + gdt(v2, a))."""
    crop_sum, counter = ref_crop_losses(c1, c2, *counts, TAU_VV)
    loss_crops = crop_sum / counter
    loss_av = 0.5 * (ref_gdt_loss(v1, a, TAU_VA) + ref_gdt_loss(v2, a, TAU_VA))
    return 0.5 * loss_crops + 0.5 * loss_av, counter


# ---- data ---------------------------------------------------------------------------------------


def random_views(counts, seed):
    """Unit-norm embeddings (as the model's heads output) and the raw leaves they come from."""
    g = torch.Generator().manual_seed(seed)
    leaves = []

    def unit(*shape):
        x = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
        leaves.append(x)
        return F.normalize(x, dim=-1)

    v1, v2, a = unit(B, E), unit(B, E), unit(B, E)
    crops = [{g_: unit(k, B, E) for g_, k in zip(GROUPS, counts, strict=True)} for _ in range(2)]
    return v1, v2, a, crops, leaves


def as_lists(crops):
    return {g: list(t.unbind(0)) for g, t in crops.items()}


# ---- tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_batched_equals_the_released_code(name):
    counts, n_terms = VARIANTS[name]
    v1, v2, a, (c1, c2), leaves = random_views(counts, seed=len(name))
    assert len(official_terms(dict(zip(GROUPS, counts, strict=True)))) == n_terms
    total, terms = official_crop_loss(c1, c2, TAU_VV)
    ref_sum, ref_terms = ref_crop_losses(as_lists(c1), as_lists(c2), *counts, TAU_VV)
    assert terms == ref_terms == n_terms
    torch.testing.assert_close(total, ref_sum, rtol=1e-5, atol=1e-5)

    out = stica_loss("feature_crops", a, v1, v2, crops1=c1, crops2=c2)
    ref, _ = ref_total_loss(v1, v2, a, as_lists(c1), as_lists(c2), counts)
    assert out["n_vv_terms"] == n_terms
    torch.testing.assert_close(out["loss"], ref, rtol=1e-5, atol=1e-5)

    # and the gradients of every input (keys under a stop-gradient in both)
    got = torch.autograd.grad(out["loss"], leaves, allow_unused=True, retain_graph=True)
    want = torch.autograd.grad(ref, leaves, allow_unused=True)
    for leaf, g_got, g_want in zip(leaves, got, want, strict=True):
        g_got = torch.zeros_like(leaf) if g_got is None else g_got
        g_want = torch.zeros_like(leaf) if g_want is None else g_want
        torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-7)


def test_paper_best_has_12_terms_and_the_official_scale():
    counts, _ = VARIANTS["paper best: space 2x6^2 + 4x4^2, time 2x3 + 1x2"]
    v1, v2, a, (c1, c2), _ = random_views(counts, seed=1)
    out = stica_loss("feature_crops", a, v1, v2, crops1=c1, crops2=c2)
    assert out["n_vv_terms"] == 12
    # random embeddings: every NCE term is near log(B); means keep the total near log(B), where
    # the paper's-text reading (150 terms summed at B = 512) starts near 300
    assert out["loss"].item() < 2 * torch.log(torch.tensor(float(B))).item()
    text = stica_loss(
        "feature_crops",
        a,
        v1,
        v2,
        crops1=c1,
        crops2=c2,
        vv_pairs="all",
        vv_reduction="sum",
        va_reduction="sum",
        stop_grad_keys=False,
    )
    assert text["n_vv_terms"] == 2 * ((1 + 4 + 5) ** 2 - 5**2) == 150
    assert text["loss"].item() > 20 * out["loss"].item()


def test_keys_receive_no_gradient_where_the_recipe_detaches_them():
    counts, _ = VARIANTS["paper best: space 2x6^2 + 4x4^2, time 2x3 + 1x2"]
    c1 = {k: v.detach().requires_grad_() for k, v in random_views(counts, seed=2)[3][0].items()}
    c2 = {k: v.detach().requires_grad_() for k, v in random_views(counts, seed=3)[3][1].items()}
    v1, v2, a = (F.normalize(torch.randn(B, E, dtype=torch.float64), dim=1) for _ in range(3))
    loss = stica_loss("feature_crops", a, v1, v2, crops1=c1, crops2=c2)["loss"]
    names = [(1, g) for g in GROUPS] + [(2, g) for g in GROUPS]
    tensors = [c1[g] for g in GROUPS] + [c2[g] for g in GROUPS]
    grads = dict(zip(names, torch.autograd.grad(loss, tensors, allow_unused=True), strict=True))
    grads = {k: torch.zeros_like(c1[k[1]]) if g is None else g for k, g in grads.items()}
    # medium crop 1 of L1 is only ever a key (of the small crops of L2): no gradient
    assert grads[1, "space_medium"][0].abs().max() == 0
    assert grads[1, "time_medium"][0].abs().max() == 0
    # medium crop 2 of L1 is a query of the symmetric term: it trains
    assert grads[1, "space_medium"][1].abs().max() > 0
    # every small crop of L2 is a query; small crops of L1 and medium crop 1 of L2 take no part
    assert grads[2, "space_small"].abs().amax(dim=(1, 2)).min() > 0
    assert grads[1, "space_small"].abs().max() == 0
    assert grads[2, "space_medium"][0].abs().max() == 0

    # cross-modal with detached keys: the gradient of L1's view is that of its query terms only
    from stica.losses import cross_modal_loss

    v = torch.randn(B, E, dtype=torch.float64, requires_grad=True)
    g_detached = torch.autograd.grad(cross_modal_loss(v, None, a), v)[0]
    query_only = 0.5 * ref_nce(F.normalize(v, dim=1), a, TAU_VA)  # a -> v has v as a key
    torch.testing.assert_close(g_detached, torch.autograd.grad(query_only, v)[0])
    g_through = torch.autograd.grad(cross_modal_loss(v, None, a, detach_keys=False), v)[0]
    assert (g_through - g_detached).abs().max() > 1e-6  # the switch really changes the gradient


def test_official_pairs_refuse_counts_the_released_code_cannot_take():
    with pytest.raises(ConfigError, match="pretrain.crops.space_medium"):
        load_section("pretrain", None, ["crops.space_medium=3"])
    with pytest.raises(ConfigError, match="pretrain.crops.time_small"):
        load_section("pretrain", None, ["crops.time_small=1", "crops.time_medium=0"])
    with pytest.raises(ConfigError, match="no within-modal term"):
        load_section("pretrain", None, ["crops.space_medium=1", "crops.space_small=0"])
    # the paper-text reading takes any counts
    load_section("pretrain", None, ["crops.space_medium=3", "vv_pairs=all"])
    with pytest.raises(ValueError, match="same crops"):
        x = torch.randn(2, 3, 4)
        official_crop_loss({"space_medium": x}, {"space_medium": x[:1]})
