"""Warm-up adaptation, composed with the kernels' cores during warm-up only (torch side).

- :mod:`~ebmppl.pyro.adaptation.dual_averaging`: the step size (``init/update/current/final``).
- :mod:`~ebmppl.pyro.adaptation.window`: the ring buffer of the last warm-up positions.
- :mod:`~ebmppl.pyro.adaptation.flow_mcmc`: FlowMCMC's warm-up (scheduled flow fits, the score preconditioner).
- :mod:`~ebmppl.pyro.adaptation.neutra`: NeuTraHMC's warm-up (scheduled transport fits, stranded walkers,
  trajectory length).
"""

from ebmppl.pyro.adaptation import dual_averaging, flow_mcmc, neutra, window

__all__ = ["dual_averaging", "flow_mcmc", "neutra", "window"]
