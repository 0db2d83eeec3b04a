"""Independent double wells (Many-Well's, one per (x1, x2) pair), for the FlowMCMC tests of both backends."""

import numpy as np


def double_wells_energy(x, xp):
    """``sum_w x1_w^4 - 6 x1_w^2 - 0.5 x1_w + 0.5 x2_w^2`` over the pairs of ``x``; ``xp`` is jnp or torch."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return xp.sum(x1**4 - 6 * x1**2 - 0.5 * x1 + 0.5 * x2**2, -1)


def deep_side_weight() -> float:
    """P(x1 > 0) of one well, by quadrature: 0.8443."""
    grid = np.linspace(-5.0, 5.0, 200_001)
    density = np.exp(-(grid**4 - 6 * grid**2 - 0.5 * grid))
    return float(density[grid > 0].sum() / density.sum())
