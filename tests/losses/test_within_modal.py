import pytest
import torch

from stica.losses import MODES, info_nce, stica_loss, within_modal_loss
from stica.losses.within_modal import within_modal_loss_reference


def make_views(m: int, n: int, b: int = 4, e: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    views = {"full": torch.randn(1, b, e, generator=g, dtype=torch.float64)}
    views["medium"] = torch.randn(m, b, e, generator=g, dtype=torch.float64)
    views["small"] = torch.randn(n, b, e, generator=g, dtype=torch.float64)
    return views


@pytest.mark.parametrize("m,n", [(0, 0), (1, 0), (0, 1), (2, 4), (3, 2), (1, 5)])
def test_term_count_and_batched_equals_loop(m, n):
    t1, t2 = make_views(m, n, seed=1), make_views(m, n, seed=2)
    loss, terms = within_modal_loss(t1, t2, 0.5)
    assert terms == 2 * ((1 + m + n) ** 2 - n**2)
    ref_loss, ref_terms = within_modal_loss_reference(t1, t2, 0.5)
    assert ref_terms == terms
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-10)


def test_space_and_time_groups_small_rule():
    # paper best: space 2 medium + 4 small, time 2 medium + 1 small: the time-small crop is small
    g = torch.Generator().manual_seed(4)
    b, e = 3, 5

    def views():
        return {
            "full": torch.randn(1, b, e, generator=g),
            "space_medium": torch.randn(2, b, e, generator=g),
            "space_small": torch.randn(4, b, e, generator=g),
            "time_medium": torch.randn(2, b, e, generator=g),
            "time_small": torch.randn(1, b, e, generator=g),
        }

    t1, t2 = views(), views()
    m, n = 4, 5
    loss, terms = within_modal_loss(t1, t2)
    assert terms == 2 * ((1 + m + n) ** 2 - n**2)
    ref, _ = within_modal_loss_reference(t1, t2)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    mean, _ = within_modal_loss(t1, t2, reduction="mean")
    assert mean.item() == pytest.approx(loss.item() / terms, rel=1e-6)


def test_pair_list_input_equals_mapping():
    t1, t2 = make_views(2, 2, seed=5), make_views(2, 2, seed=6)

    def as_pairs(v):
        return [(False, v["full"][0]), (False, v["medium"]), (True, v["small"])]

    a, na = within_modal_loss(t1, t2)
    b, nb = within_modal_loss(as_pairs(t1), as_pairs(t2))
    assert na == nb and a.item() == pytest.approx(b.item(), rel=1e-12)


def test_two_full_views_is_symmetric_pair():
    t1, t2 = make_views(0, 0, seed=7), make_views(0, 0, seed=8)
    loss, terms = within_modal_loss(t1, t2, 0.5)
    v1, v2 = t1["full"][0], t2["full"][0]
    assert terms == 2
    assert loss.item() == pytest.approx((info_nce(v1, v2, 0.5) + info_nce(v2, v1, 0.5)).item())


def test_gradients_match_loop():
    t1, t2 = make_views(2, 3, seed=9), make_views(2, 3, seed=10)
    leaves = [x.requires_grad_() for x in (*t1.values(), *t2.values())]
    within_modal_loss(t1, t2)[0].backward()
    got = [x.grad.clone() for x in leaves]
    for x in leaves:
        x.grad = None
    within_modal_loss_reference(t1, t2)[0].backward()
    for a, b in zip(got, (x.grad for x in leaves), strict=True):
        torch.testing.assert_close(a, b)


def test_validation_errors():
    t = make_views(1, 1)
    with pytest.raises(ValueError, match="share"):
        within_modal_loss(t, make_views(1, 1, b=5))
    with pytest.raises(ValueError, match="small x small"):
        within_modal_loss({"small": t["small"]}, {"small": t["small"]})
    with pytest.raises(ValueError, match="no views"):
        within_modal_loss({}, t)
    with pytest.raises(ValueError, match="temperature"):
        within_modal_loss(t, t, 0.0)
    with pytest.raises(ValueError, match=r"\(B, E\) or \(K, B, E\)"):
        within_modal_loss({"full": torch.randn(3)}, t)
    with pytest.raises(ValueError, match="reduction"):
        within_modal_loss(t, t, reduction="max")


# the paper's-text reading of eq. (6)/(7): every pair, sums, gradients through the keys
TEXT_READING = {
    "vv_pairs": "all",
    "vv_reduction": "sum",
    "va_reduction": "sum",
    "stop_grad_keys": False,
}


def test_stica_loss_modes_paper_text_reading():
    g = torch.Generator().manual_seed(11)
    b, e = 4, 6
    a, v1, v2, s1, s2 = (torch.randn(b, e, generator=g, dtype=torch.float64) for _ in range(5))
    crops1 = {"space_medium": torch.randn(2, b, e, generator=g, dtype=torch.float64)}
    crops1["space_small"] = torch.randn(3, b, e, generator=g, dtype=torch.float64)
    crops2 = {k: torch.randn_like(v) for k, v in crops1.items()}
    out = {
        mode: stica_loss(
            mode, a, v1, v2, crops1=crops1, crops2=crops2, small_rgb=[s1, s2], **TEXT_READING
        )
        for mode in MODES
    }
    va1 = info_nce(v1, a, 0.1) + info_nce(a, v1, 0.1)
    assert out["default"]["loss"].item() == pytest.approx(0.5 * va1.item())
    assert out["default"]["n_vv_terms"] == 0
    vv2 = info_nce(v1, v2, 0.5) + info_nce(v2, v1, 0.5)
    assert out["two_crops"]["loss_vv"].item() == pytest.approx(vv2.item())
    assert out["two_crops"]["n_vv_terms"] == 2
    multi = vv2 + sum(info_nce(v1, s, 0.5) + info_nce(v2, s, 0.5) for s in (s1, s2))
    assert out["multi_crops"]["loss_vv"].item() == pytest.approx(multi.item())
    assert out["multi_crops"]["n_vv_terms"] == 6
    assert out["feature_crops"]["n_vv_terms"] == 2 * ((1 + 2 + 3) ** 2 - 3**2)
    for mode in MODES[1:]:
        r = out[mode]
        expected = 0.5 * r["loss_va"] + 0.5 * r["loss_vv"]
        assert r["loss"].item() == pytest.approx(expected.item())
        assert r["loss_va"].item() == pytest.approx(out["two_crops"]["loss_va"].item())
    # a "full" group among the crops stands for L_i itself: no double counting
    with_full = stica_loss(
        "feature_crops",
        a,
        v1,
        v2,
        crops1={"full": v1[None], **crops1},
        crops2={"full": v2[None], **crops2},
        **TEXT_READING,
    )
    assert with_full["loss"].item() == pytest.approx(out["feature_crops"]["loss"].item())


def test_stica_loss_reductions_are_means_of_the_text_reading():
    """The released code's "mean" reductions divide the text reading's sums by the term counts."""
    g = torch.Generator().manual_seed(12)
    b, e = 5, 3
    a, v1, v2 = (torch.randn(b, e, generator=g, dtype=torch.float64) for _ in range(3))
    total = stica_loss("two_crops", a, v1, v2, **TEXT_READING)
    mean = stica_loss(
        "two_crops", a, v1, v2, vv_pairs="all", vv_reduction="mean", va_reduction="mean"
    )
    assert mean["loss_va"].item() == pytest.approx(total["loss_va"].item() / 4)
    assert mean["loss_vv"].item() == pytest.approx(total["loss_vv"].item() / 2)


def test_stica_loss_errors():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="mode"):
        stica_loss("three_crops", x, x, x)
    with pytest.raises(ValueError, match="v2"):
        stica_loss("two_crops", x, x)
    with pytest.raises(ValueError, match="small RGB"):
        stica_loss("multi_crops", x, x, x)
    with pytest.raises(ValueError, match="crops1"):
        stica_loss("feature_crops", x, x, x)
