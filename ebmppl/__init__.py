"""ebmppl: energy-based models and flow-assisted MCMC for Pyro and NumPyro.

Importing ``ebmppl`` loads neither torch nor jax; the backends live in
``ebmppl.numpyro`` and ``ebmppl.pyro``.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
