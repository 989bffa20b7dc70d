"""Section 4 of the paper: the stated properties of the bar functions, checked numerically."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from safetynet.errors import InputError
from safetynet.theory import Bar, BasicBar, bar, basic_bar, binarize, plot_figure5, two_bar_constraint

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def grid(lo_x, hi_x, lo_y, hi_y, n):
    xs = torch.linspace(lo_x, hi_x, n, dtype=torch.float64)
    ys = torch.linspace(lo_y, hi_y, n, dtype=torch.float64)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], -1)  # (n, n, 2)


@pytest.mark.parametrize("i,s,eps", [(0, 0.0, 1.0), (1, 0.3, 0.25), (2, -1.5, 2.0)])
def test_basic_bar_is_the_unit_hat(i, s, eps):
    g = torch.Generator().manual_seed(0)
    x = (4 * torch.rand(2000, 3, generator=g, dtype=torch.float64) - 2) * max(1.0, abs(s) + eps)
    phi = basic_bar(x, i, s, eps)
    # Independent closed form of (1/ε)[R(u+ε) − 2R(u) + R(u−ε)]: a hat of height 1 and half-width ε.
    hat = torch.clamp(1 - (x[:, i] - s).abs() / eps, min=0)
    torch.testing.assert_close(phi, hat, rtol=0, atol=1e-12)
    # Support exactly where |x_i − s| < ε: positive inside, zero outside. Float round-off makes
    # R(u+ε) − 2R(u) + R(u−ε) a few ulps off zero outside, so "zero" is |φ| <= 1e-12 there.
    u = (x[:, i] - s).abs()
    assert (phi[u < eps * (1 - 1e-9)] > 0).all()
    assert (phi[u >= eps].abs() <= 1e-12).all()
    assert (u >= eps).sum() > 100 and (u < eps).sum() > 100  # both regions are sampled
    # On the boundary itself, with dyadic numbers (exact in binary), the value is exactly 0.
    boundary = torch.zeros(2, 3, dtype=torch.float64)
    boundary[:, i] = torch.tensor([0.5 - 0.25, 0.5 + 0.25], dtype=torch.float64)
    assert (basic_bar(boundary, i, 0.5, 0.25) == 0).all()
    # Peak value 1 at the centre, and nowhere above 1.
    centre = torch.zeros(1, 3, dtype=torch.float64)
    centre[0, i] = s
    assert basic_bar(centre, i, s, eps).item() == 1.0
    assert phi.max() <= 1.0
    # Depends on coordinate i only.
    y = x.clone()
    y[:, [j for j in range(3) if j != i]] += 7.0
    torch.testing.assert_close(basic_bar(y, i, s, eps), phi)


def test_bar_is_a_weighted_l1_ball():
    g = torch.Generator().manual_seed(1)
    s, eps = [0.2, -0.4, 1.0], [0.5, 1.0, 0.25]
    x = 3 * torch.rand(5000, 4, generator=g, dtype=torch.float64) - 1.5
    b = bar(x, [0, 1, 3], s, eps)
    # R(Σφ − #I + 1) = max(0, 1 − Σ |x_i − s_i| / ε_i): derive inside the box all hats are
    # 1 − |u_i|/ε_i; outside one φ is 0 and the rest sum to ≤ #I − 1.
    r = sum((x[:, i] - si).abs() / ei for i, si, ei in zip([0, 1, 3], s, eps))
    torch.testing.assert_close(b, torch.clamp(1 - r, min=0), rtol=0, atol=1e-12)
    assert (b[r < 1 - 1e-9] > 0).all() and (b[r >= 1] <= 1e-12).all()
    centre = torch.tensor([[0.2, -0.4, 9.0, 1.0]], dtype=torch.float64)
    assert bar(centre, [0, 1, 3], s, eps).item() == 1.0
    # Paper: with one ε, support is ||x_I − s_I||_1 < ε (Figure 5, right: the diamond |x|+|y| < 1).
    pts = grid(-2, 2, -2, 2, 201).reshape(-1, 2)
    d = bar(pts, [0, 1], 0.0, 1.0)
    l1 = pts.abs().sum(1)
    assert (d[l1 < 1 - 1e-9] > 0).all() and (d[l1 >= 1] <= 1e-12).all()


def test_modules_are_exactly_linear_and_relu():
    g = torch.Generator().manual_seed(2)
    x = 4 * torch.rand(1000, 3, generator=g) - 2
    mod = BasicBar(3, 1, 0.5, 0.75)
    torch.testing.assert_close(mod(x)[:, 0], basic_bar(x, 1, 0.5, 0.75), rtol=0, atol=1e-6)
    mod_b = Bar(3, [0, 2], [0.0, 0.5], [1.0, 0.5])
    torch.testing.assert_close(mod_b(x)[:, 0], bar(x, [0, 2], [0.0, 0.5], [1.0, 0.5]), rtol=0, atol=1e-6)
    for m in (mod, mod_b):
        kinds = {type(c) for c in m.children()}
        assert kinds == {torch.nn.Linear, torch.nn.ReLU}, kinds  # built only from ReLUs and linear maps
        assert not any(p.requires_grad for p in m.parameters())
    assert sum(isinstance(c, torch.nn.ReLU) for c in mod_b.children()) == 2


def test_bar_is_piecewise_linear_along_lines():
    """Along any line the output is piecewise linear with few kinks (a smooth bump would fail)."""
    g = torch.Generator().manual_seed(3)
    mod = Bar(2, [0, 1], [0.1, -0.2], [0.8, 0.6]).double()
    k = 2  # bars: 3k hidden ReLUs + 1 output ReLU -> at most 6k + 1 kinks on a line
    t = torch.linspace(-3, 3, 2001, dtype=torch.float64)
    for _ in range(5):
        p0 = torch.randn(2, generator=g, dtype=torch.float64) * 0.3
        d = torch.randn(2, generator=g, dtype=torch.float64)
        f = mod(p0 + t[:, None] * d)[:, 0]
        second = f[2:] - 2 * f[1:-1] + f[:-2]
        assert int((second.abs() > 1e-9).sum()) <= 2 * (6 * k + 1)
        assert f.max() > 0  # the line crosses the bar, so the test is not vacuous
    # The same statistic on a smooth bump has kinks everywhere: the check can fail.
    smooth = torch.exp(-(t ** 2))
    assert int(((smooth[2:] - 2 * smooth[1:-1] + smooth[:-2]).abs() > 1e-9).sum()) > 1000


def test_disconnected_constraint_set():
    """{x | b_t(b(x;1,0,ε) + b(x;1,1,ε)) = 1} has two components for ε < 1/2 (paper, end of sec. 4)."""
    pts = grid(-1.0, 2.0, -1.0, 1.0, 301)
    for eps, t in [(0.3, 0.5), (0.45, 0.1), (0.2, 0.9)]:
        mask = two_bar_constraint(pts, eps, t).numpy()
        labels, n = ndimage.label(mask)
        assert n == 2, (eps, t, n)
        xs = pts[..., 0].numpy()
        centres = sorted(xs[labels == c].mean() for c in (1, 2))
        np.testing.assert_allclose(centres, [0.0, 1.0], atol=0.02)
        # Each component is the slab |x_1 − c| < ε(1 − t) (grid points within round-off of the
        # slab's edge are left out of the comparison).
        dist = np.minimum(np.abs(xs), np.abs(xs - 1)) - eps * (1 - t)
        clear = np.abs(dist) > 1e-9
        np.testing.assert_array_equal(mask[clear], (dist < 0)[clear])
    # With wide bars the set is connected (one component), so the count above is a real check:
    # at x = 1/2 the sum is 2 − 1/ε, which exceeds t = 0.5 for ε = 0.9.
    _, n = ndimage.label(two_bar_constraint(pts, 0.9, 0.5).numpy())
    assert n == 1


def test_binarize():
    u = torch.tensor([0.0, 0.5, 0.50001, 2.0])
    torch.testing.assert_close(binarize(u, 0.5), torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_bad_arguments():
    x = torch.zeros(4, 2)
    with pytest.raises(InputError, match="eps"):
        basic_bar(x, 0, 0.0, 0.0)
    with pytest.raises(InputError, match="shape"):
        basic_bar(x, 2, 0.0, 1.0)
    with pytest.raises(InputError, match="repeat"):
        bar(x, [0, 0], 0.0, 1.0)
    with pytest.raises(InputError, match="one value per index"):
        bar(x, [0, 1], [0.0], 1.0)
    with pytest.raises(InputError, match="empty"):
        bar(x, [], 0.0, 1.0)
    with pytest.raises(InputError, match="threshold"):
        binarize(x, 0.0)
    with pytest.raises(InputError, match="float"):
        basic_bar(torch.zeros(2, 2, dtype=torch.int64), 0, 0.0, 1.0)
    with pytest.raises(InputError, match="dim"):
        Bar(2, [0, 2], 0.0, 1.0)


def test_plot_figure5(tmp_path):
    out = plot_figure5(tmp_path / "fig5.png", resolution=101)
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    with pytest.raises(InputError):
        plot_figure5(tmp_path / "fig5.jpg", resolution=101)
