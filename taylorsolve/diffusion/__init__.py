"""Diffusion-model layer of taylorsolve: processes and schedules, time grids, parameterisations, the
DDIM and probability-flow ODEs, the model boundary (plain callables, diffusers and EDM models), the
sampler registry with GENIE and its peers, NFE budgets, guidance, encoding.

Conventions (GENIE paper, sec. 2 and app. A): time runs from data (t = 0) to noise (t = 1);
``gamma = sigma / alpha``; ``xbar = x / alpha = x sqrt(1 + gamma^2)`` (VP); the DDIM ODE
``d xbar / d gamma = eps`` (eq. (6)).  All time quantities are float64.

A second process, critically-damped Langevin diffusion (:class:`CLD`, :mod:`taylorsolve.diffusion.cld`),
runs through the same loop; the gDDIM units (:mod:`taylorsolve.diffusion.samplers.gddim`) serve every process.
"""
from __future__ import annotations

from .schedules import (
    CosineVPSchedule,
    CustomSchedule,
    DiscreteVPSchedule,
    LinearVPSchedule,
    VESchedule,
    Schedule,
    as_time_tensor,
    get_schedule,
)
from .grids import GRID_NAMES, gamma_grid, time_grid, validate_diffusion_grid
from .parameterization import (
    PARAMETERIZATIONS,
    EpsModel,
    broadcast_to_x,
    eps_from_score,
    eps_from_v,
    eps_from_x0,
    from_eps,
    score_from_eps,
    score_from_x0,
    to_eps,
    v_from_eps,
    v_from_x0,
    x0_from_eps,
    x0_from_score,
    x0_from_v,
)
from .odes import (
    ReverseSDE,
    ddim_ode_rhs,
    dx_dgamma,
    from_xbar,
    probability_flow_rhs,
    reverse_sde,
    to_xbar,
)
from .guidance import GuidedEpsModel, cfg_derivatives, cfg_eps, guided_eps_model, slerp

__all__ = [
    # schedules
    "Schedule",
    "LinearVPSchedule",
    "CosineVPSchedule",
    "CustomSchedule",
    "DiscreteVPSchedule",
    "VESchedule",
    "get_schedule",
    "as_time_tensor",
    # grids
    "GRID_NAMES",
    "time_grid",
    "validate_diffusion_grid",
    "gamma_grid",
    # parameterization
    "PARAMETERIZATIONS",
    "EpsModel",
    "broadcast_to_x",
    "eps_from_x0",
    "x0_from_eps",
    "eps_from_v",
    "v_from_eps",
    "eps_from_score",
    "score_from_eps",
    "x0_from_v",
    "v_from_x0",
    "x0_from_score",
    "score_from_x0",
    "to_eps",
    "from_eps",
    # odes
    "ddim_ode_rhs",
    "probability_flow_rhs",
    "reverse_sde",
    "ReverseSDE",
    "to_xbar",
    "from_xbar",
    "dx_dgamma",
    # guidance
    "cfg_eps",
    "cfg_derivatives",
    "guided_eps_model",
    "GuidedEpsModel",
    "slerp",
]

from . import processes, providers, registry
from .processes import DiffusionProcess, ScalarProcess, get_process
from .cld import CLD
from .boundary import DiffusionModel, eps_function, from_diffusers, from_edm
from .providers import AutodiffTerms, DerivativeProvider, autodiff_terms, get_provider
from .registry import Sampler, available_methods, canonical_method, get_sampler, register
from .samplers import METHODS
from .sampling import SampleResult, sample
from .cost import SampleStats, expected_nfe, overhead_adjusted_nfe, steps_for_nfe
from .encoding import decode, encode

__all__ += [
    "processes",
    "DiffusionProcess",
    "ScalarProcess",
    "get_process",
    "CLD",
    "DiffusionModel",
    "from_diffusers",
    "from_edm",
    "eps_function",
    "providers",
    "DerivativeProvider",
    "get_provider",
    "autodiff_terms",
    "AutodiffTerms",
    "registry",
    "Sampler",
    "register",
    "get_sampler",
    "canonical_method",
    "available_methods",
    "sample",
    "SampleResult",
    "METHODS",
    "SampleStats",
    "expected_nfe",
    "steps_for_nfe",
    "overhead_adjusted_nfe",
    "encode",
    "decode",
]
