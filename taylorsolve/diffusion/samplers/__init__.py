"""The built-in sampler units (each module registers its units on import) and the sampling entry point.

``from taylorsolve.diffusion.samplers import sample, METHODS`` keeps working; :data:`METHODS` lists the
built-in methods, :func:`taylorsolve.diffusion.registry.available_methods` everything registered.
"""
from __future__ import annotations

from . import taylor, pndm, heun, dpm_solver, deis, unipc, stochastic, adaptive  # noqa: F401,I001  (registration order)
from . import gddim, sscs  # noqa: F401,I001  (gDDIM for every process; SSCS for CLD)
from ..registry import available_methods, canonical_method, get_sampler

#: the built-in methods (in registration order)
METHODS = available_methods()

from ..sampling import SampleResult, sample  # noqa: E402

__all__ = ["METHODS", "sample", "SampleResult", "canonical_method", "get_sampler"]
