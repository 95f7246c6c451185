"""The attribution methods explain serves and the number of integrated-gradients steps; imports no torch."""

from __future__ import annotations

import difflib

from ..errors import ConfigError

METHODS = ("integrated_gradients", "saliency", "occlusion")

# Integrated gradients: the path integral from the baseline x' to x by the midpoint rule in this
# many steps (h = 1/IG_STEPS). For a network of linear layers, ReLU, max-pooling and batch norm in
# eval mode, f is piecewise linear along the straight path, so the integrand
# g(a) = grad f(x' + a (x - x')) . (x - x') is piecewise constant with jumps J_k at the kinks, and
# the rule's error is sum_k J_k e_k with |e_k| <= h/2: at most TV(g) h / 2 (TV(g) = sum |J_k|).
# For a one-hidden-layer MLP TV(g) is exact from the weights and tests/test_explain.py checks the
# bound. A deep CNN's path has ~2,000 small kinks whose positions in their cells are set by the
# weights, not the grid, so the e_k act as independent and uniform: the error's spread is
# h sqrt(sum J_k^2 / 12), about 0.1% of |f(x) - f(x')| at 128 steps, and 1% lies over 6 spreads
# away (the numbers, and the 1/n decay the test checks, are in tests/test_explain.py).
IG_STEPS = 128


def check_method(method: str) -> str:
    """`method` when explain serves it; else a ConfigError naming the choices (exit 2)."""
    if method in METHODS:
        return method
    close = difflib.get_close_matches(str(method), METHODS, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"Unknown attribution method '{method}' (--method).{hint} Allowed: {', '.join(METHODS)}.")
