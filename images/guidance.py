r"""Classifier-free guidance on the class-conditional U-Net (GENIE sec. 5.2, app. F.3; Ho and Salimans 2021).

**One network, a dropped label.**  The class-conditional model is one U-Net with a label embedding
(``num_classes`` classes plus a "no label" index ``num_classes``, :mod:`images.unet`), trained with the
label replaced by "no label" with probability ``--label-dropout`` (Ho and Salimans' joint training), so

    eps_c(x, t) = eps_theta(x, t, c),    eps_u(x, t) = eps_theta(x, t, no label),
    eps_hat(x, t) = (1 + w) eps_c - w eps_u                                            (eq. (79))

is the guided model; the DDIM ODE of eq. (6) with ``eps_hat`` is the *guided ODE*.  (The paper trains two
networks, app. F.3; one network with a dropped label shares the parameters and is what the project uses.)

**Three ways to get GENIE's derivative on the guided ODE:**

* eq. (81): ``(1 + w) k_c - w k_u`` with ``k_c ~ d eps_c/d gamma`` along ``eps_c``'s own ODE and ``k_u`` along
  ``eps_u``'s.  One head, distilled with the label dropped as in training, serves both branches (the label
  reaches it through the embedding).  It is not ``d eps_hat/d gamma`` along the guided ODE; with
  ``J = d eps/d x`` and the tangent ``dx/dgamma = eps / sqrt(1 + gamma^2) - gamma x / (1 + gamma^2)``
  (eq. (11)) the difference is

      (1 + w) k_c - w k_u - d eps_hat/d gamma = w (1 + w) / sqrt(1 + gamma^2) (J_c - J_u)(eps_u - eps_c)

  (:func:`eq81_gap`; the project's docs/PAPER_ERRATA.md), so GENIE with eq. (81) is a first-order method
  on the guided ODE unless ``J_c = J_u`` along the way;
* a head distilled along the guided ODE itself: :class:`GuidedUNet` is the guided model as one network
  with the guidance scale ``w`` as an input (per image), its target ``d eps_hat/d gamma`` by one JVP
  through both branches (:func:`guided_target`).  With an exact head this is the second-order step;
* the exact guided derivative by autodiff (``derivative="autodiff"`` with ``guidance_scale``), one JVP of
  both branches per step, its cost counted in NFE budgets.

Named errors: :class:`~images.errors.GuidanceError` (guidance of a model without a label embedding, a
non-finite scale), :class:`~images.errors.ClassLabelError` (requested classes out of range).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from taylorsolve.diffusion import eps_function
from taylorsolve.diffusion.distillation import derivative_targets
from taylorsolve.diffusion.schedules import LinearVPSchedule

from .errors import ClassLabelError, GuidanceError

__all__ = [
    "check_guidable",
    "check_requested_labels",
    "check_scale",
    "GuidedUNet",
    "guidance_features",
    "branch_eps",
    "ode_derivative",
    "guided_target",
    "eq81_pair",
    "eq81_gap",
]

_SCHED = LinearVPSchedule()


def _unet(model: Any) -> Any:
    """The U-Net behind a wrapper (:class:`GuidedUNet`, a headed model, a ``DiffusionModel``)."""
    for _ in range(4):
        inner = next((m for m in (getattr(model, a, None) for a in ("unet", "module"))
                      if isinstance(m, nn.Module) and m is not model), None)
        if inner is None:
            return model
        model = inner
    return model


def check_guidable(model: Any) -> int:
    """``num_classes`` of a class-conditional model; :class:`GuidanceError` for a model without a label
    embedding (classifier-free guidance needs a conditional and an unconditional branch)."""
    cfg = getattr(_unet(model), "config", None)
    nc = int(getattr(cfg, "num_classes", 0) or 0)
    if nc <= 0:
        raise GuidanceError(
            "classifier-free guidance needs a class-conditional model (num_classes > 0, trained with --class-cond "
            "--label-dropout p so that the 'no label' branch is the unconditional model); this model is unconditional")
    return nc


def check_requested_labels(model: Any, labels: Any, batch: int | None = None) -> torch.Tensor:
    """Requested classes as a ``[B]`` long tensor in ``[0, num_classes - 1]`` (the "no label" index is not a
    class one can request); :class:`ClassLabelError` otherwise."""
    nc = check_guidable(model)
    y = torch.as_tensor(labels)
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise ClassLabelError(f"class labels must be integers, got dtype {y.dtype}")
    y = y.long()
    if batch is not None and y.ndim == 0:
        y = y.expand(batch)
    if y.ndim != 1 or (batch is not None and y.shape[0] != batch):
        raise ClassLabelError(f"class labels must be a [{batch if batch is not None else 'B'}] vector, got shape "
                              f"{tuple(y.shape)}")
    if y.numel() and bool(((y < 0) | (y >= nc)).any()):
        raise ClassLabelError(f"class labels must lie in [0, {nc - 1}] for this {nc}-class model; got "
                              f"{int(y.min())}..{int(y.max())}")
    return y


def check_scale(w: Any) -> float:
    """A finite guidance scale ``w >= 0`` (:class:`GuidanceError` otherwise)."""
    try:
        wf = float(w)
    except (TypeError, ValueError) as exc:
        raise GuidanceError(f"the guidance scale must be a number, got {w!r}") from exc
    if not math.isfinite(wf) or wf < 0:
        raise GuidanceError(f"the guidance scale must be finite and >= 0, got {w!r}")
    return wf


def guidance_features(w: torch.Tensor) -> torch.Tensor:
    """``[B] -> [B, 2]``: ``(w / 4, log(1 + w))``, the guidance scale as the guided head's input (scaled
    to order one over the scales in use, 0 to 4)."""
    w = w.to(torch.float32)
    return torch.stack([w / 4.0, torch.log1p(w)], dim=-1)


class GuidedUNet(nn.Module):
    r"""The guided model ``eps_hat = (1 + w) eps(x, t, c) - w eps(x, t, no label)`` (eq. (79)) as one network.

    ``forward(x, t, class_labels, guidance)`` with ``guidance`` the scale ``w`` (a number or a ``[B]``
    tensor, one per image).  Both branches run as one batch of ``2B``.  Hook points for a head distilled
    along the guided ODE (the names of :class:`images.unet.UNet`, so the ``"unet"`` preset applies):

    * ``last_features`` -> ``[B, 2 F, H, W]``: the conditional and the unconditional branch's last decoder
      features, concatenated along channels;
    * ``embedding`` -> ``[B, emb_dim + 2]``: the conditional branch's embedding (noise level and class)
      and :func:`guidance_features` of ``w``.

    The wrapper holds no parameters of its own (its state is the U-Net's under ``unet.``; a head's teacher
    fingerprint therefore tells the guided model from the bare U-Net).
    """

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.num_classes = check_guidable(unet)
        self.unet = unet
        self.config = unet.config
        self.last_features = nn.Identity()
        self.embedding = nn.Identity()

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def example_kwargs(self, batch: int, device: Any = None) -> dict[str, torch.Tensor]:
        """Labels (class 0) and a scale (0) for a dummy pass (:func:`images.heads.example_kwargs`)."""
        return {"class_labels": torch.zeros(batch, dtype=torch.long, device=device),
                "guidance": torch.zeros(batch, dtype=torch.float64, device=device)}

    def forward(self, x: torch.Tensor, t: Any, class_labels: Any = None, guidance: Any = None) -> torch.Tensor:
        b = x.shape[0]
        if class_labels is None:
            raise GuidanceError("the guided model needs the requested class_labels (guidance towards a class)")
        if guidance is None:
            raise GuidanceError("the guided model needs the guidance scale (guidance=w, a number or a [B] tensor)")
        y = check_requested_labels(self.unet, class_labels, b).to(x.device)
        w = torch.as_tensor(guidance, dtype=torch.float64, device=x.device)
        w = w.expand(b) if w.ndim == 0 else w
        if w.shape != (b,) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise GuidanceError(f"guidance must be a finite scale >= 0 or a [{b}] vector of them, got shape "
                                f"{tuple(w.shape)}")
        tt = torch.as_tensor(t, device=x.device)
        tt = tt.expand(b) if tt.ndim == 0 else tt
        null = torch.full_like(y, self.num_classes)
        got: dict[str, torch.Tensor] = {}      # the U-Net's own hook points, recorded for this pass only
        hooks = [self.unet.last_features.register_forward_hook(lambda m, i, o: got.__setitem__("feat", o)),
                 self.unet.embedding.register_forward_hook(lambda m, i, o: got.__setitem__("emb", o))]
        try:
            out = self.unet(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, null]))
        finally:
            for h in hooks:
                h.remove()
        feat, emb = got["feat"], got["emb"]
        eps_c, eps_u = out[:b], out[b:]
        self.last_features(torch.cat([feat[:b], feat[b:]], dim=1))
        self.embedding(torch.cat([emb[:b], guidance_features(w).to(emb.dtype)], dim=1))
        wx = w.to(out.dtype).reshape(b, *([1] * (x.ndim - 1)))
        return (1.0 + wx) * eps_c - wx * eps_u


# ------------------------------------------------------------------------------------------------
# exact derivatives along an ODE, eq. (10)-(12)
# ------------------------------------------------------------------------------------------------
def branch_eps(model: nn.Module, labels: torch.Tensor | None, w: float | None = None
               ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``eps(x, t)`` of one branch through the diffusion layer's boundary: the conditional model for
    ``labels``, the unconditional one for ``labels=None``, the guided model of eq. (79) for a scale ``w``."""
    from .sampling import diffusion_model

    dm = diffusion_model(model)
    if w is None:
        return eps_function(dm, cond=None if labels is None else {"class_labels": labels})
    return eps_function(dm, cond={"class_labels": labels}, guidance_scale=float(w))


def ode_derivative(eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, t: Any,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(eps, d eps/d gamma)`` at ``(x_t, t)`` along the DDIM ODE of ``eps_fn`` itself (eq. (11)-(12), one
    JVP; :func:`taylorsolve.diffusion.distillation.derivative_targets`)."""
    tg = derivative_targets(eps_fn, x, torch.as_tensor(t, dtype=torch.float64))
    return tg.eps, tg.d1


def guided_target(model: nn.Module, x: torch.Tensor, t: Any, labels: torch.Tensor, w: float) -> torch.Tensor:
    """``d eps_hat/d gamma`` along ``eps_hat``'s own DDIM ODE (the guided head's distillation target)."""
    return ode_derivative(branch_eps(model, labels, w), x, t)[1]


def eq81_pair(model: nn.Module, x: torch.Tensor, t: Any, labels: torch.Tensor, w: float) -> torch.Tensor:
    """Eq. (81) with perfect heads: ``(1 + w) d eps_c/d gamma - w d eps_u/d gamma``, each derivative along its
    own branch's ODE (what heads distilled by Alg. 1 on the two branches approximate)."""
    _, kc = ode_derivative(branch_eps(model, labels), x, t)
    _, ku = ode_derivative(branch_eps(model, None), x, t)
    return (1.0 + w) * kc - w * ku


def eq81_gap(model: nn.Module, x: torch.Tensor, t: Any, labels: torch.Tensor, w: float) -> torch.Tensor:
    r"""``w (1 + w) / sqrt(1 + gamma^2) (J_c - J_u)(eps_u - eps_c)``: eq. (81) with perfect heads minus the
    guided ODE's derivative (two JVPs in ``x`` only; module docstring)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    g = _SCHED.gamma(t)
    fc, fu = branch_eps(model, labels), branch_eps(model, None)
    with torch.no_grad():
        v = fu(x, t) - fc(x, t)
        jc = torch.func.jvp(lambda xx: fc(xx, t), (x,), (v,))[1]
        ju = torch.func.jvp(lambda xx: fu(xx, t), (x,), (v,))[1]
    return (w * (1.0 + w) / torch.sqrt(1.0 + g * g)).to(x.dtype) * (jc - ju)
