"""The ``ebmppl`` command line and its run folders.

A run folder holds ``config.json``, the data it was trained on
(``train.npy``, ``test.npy``), the backend's checkpoint, ``metrics.json`` and
the report's figures. The energy network sees standardised coordinates
``(x - loc) / scale``; the model is
``p(x) ∝ exp(-E((x - loc) / scale)) · N(x; loc, (3 scale)²)``.

Backend-neutral (importing them loads neither torch nor jax):

- :mod:`ebmppl.app.config`: the run's ``config.json``, the defaults of
  ``ebmppl train`` and :class:`~ebmppl.app.config.RunError`;
- :mod:`ebmppl.app.data`: the data of a run;
- :mod:`ebmppl.app.loop`: the training loop, with Ctrl-C deferred to the end
  of a step;
- :mod:`ebmppl.app.report`: ``metrics.json`` and the figures;
- :mod:`ebmppl.app.cli`: ``ebmppl train`` and ``ebmppl sample``;
- :mod:`ebmppl.app.demo`: the FlowMCMC sampler demo (``python -m ebmppl.app.demo``).

Each backend's part, the same names on both sides (``train``,
``sample_run``, ``load_potential``, ``TrainedPotential``):
:mod:`ebmppl.app.numpyro_run` and :mod:`ebmppl.app.pyro_run`, imported by the
command line only when a command needs them.
"""

__all__: list[str] = []
