r"""The heads of the main job: the standard head, Table 2's ablations and the second-order head, all
distilled from one target pool (``python -m images heads``).

Every variant is :func:`images.distill.distill` with one knob changed (:data:`VARIANTS`):

=================  ==========================================================================
``standard``       the paper's choices: mixed parameterisation eq. (14), ``g_d = gamma^2`` eq. (15),
                   head fed ``eps_theta``, autodiff targets, one residual block
``no_mixed``       the head's output is the derivative directly (no eq. (14))
``no_weighting``   ``g_d = 1``
``bigger``         two residual blocks
``true_noise``     the head's eps input is the true noise during distillation (the released code)
``ad_free``        the AD-free targets of app. D
``second_order``   a head for ``d^2 eps / d gamma^2`` (nested JVP targets, app. B.3), for TTM-3
=================  ==========================================================================

The teacher's passes and JVPs are computed once for a pool of draws (:func:`images.distill.build_pool`)
and shared by all variants, so the variants differ only in what the table says.  Each head is evaluated
on fresh held-out draws (:func:`images.distill.evaluate_head`) and written, EMA weights only, to
``--commit-to`` (the committed heads beside the digits model) with its record.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from .checkpoint import atomic_write_text, find_checkpoint, load_model
from .distill import HEAD_FILE, DistillArgs, _dataset_for, build_pool, distill
from .heads import attach_head, export_head

__all__ = ["VARIANTS", "distill_variants", "DEFAULT_HEADS_DIR"]

#: the variants and the :class:`DistillArgs` fields each changes
VARIANTS: dict[str, dict[str, Any]] = {
    "standard": {},
    "no_mixed": {"mixed": False},
    "no_weighting": {"weighting": False},
    "bigger": {"num_blocks": 2},
    "true_noise": {"feed": "true_noise"},
    "ad_free": {"objective": "ad_free"},
    "second_order": {"order": 2},
}

DEFAULT_HEADS_DIR = Path(__file__).resolve().parent / "checkpoints" / "digits_tiny" / "heads"


def _targets_needed(variants: Sequence[str]) -> tuple[str, ...]:
    need = []
    for v in variants:
        kw = VARIANTS[v]
        name = "ad_free" if kw.get("objective") == "ad_free" else ("autodiff2" if kw.get("order") == 2 else "autodiff")
        if name not in need:
            need.append(name)
    return tuple(need)


def distill_variants(out: Path, *, checkpoint: str, variants: Sequence[str] = tuple(VARIANTS), pool_size: int = 8192,
                     steps: int = 3000, seed: int = 0, threads: int | None = None, commit_to: Path | None = None,
                     progress: bool = True, base: DistillArgs | None = None) -> dict[str, Any]:
    """Distil ``variants`` from one pool; returns ``{variant: {"eval", "final_loss", "seconds", "file"}}``
    and writes ``out/summary.json`` (and the committed heads with ``commit_to``)."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        from .errors import UnknownNameError

        raise UnknownNameError(f"unknown head variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    if threads:
        torch.set_num_threads(int(threads))
    out.mkdir(parents=True, exist_ok=True)
    tpath = find_checkpoint(checkpoint)
    teacher = load_model(tpath).eval().requires_grad_(False)
    base_args = base or DistillArgs()
    base_args = replace(base_args, checkpoint=str(tpath), steps=steps, seed=seed, pool=pool_size, threads=threads,
                        progress=progress)
    ds = _dataset_for(base_args, tpath)
    t0 = time.perf_counter()
    probe = attach_head(teacher, overhead=None)
    pool = build_pool(probe, ds, pool_size, seed=seed, t_cutoff=base_args.t_cutoff, time_sampling=base_args.time_sampling,
                      targets=_targets_needed(variants), progress=progress)
    probe.remove()
    pool_seconds = time.perf_counter() - t0
    summary: dict[str, Any] = {"pool": {"size": pool_size, "seconds": pool_seconds, "targets": list(_targets_needed(variants))},
                               "checkpoint": str(tpath), "steps": steps, "seed": seed, "variants": {}}
    for v in variants:
        args = replace(base_args, out=str(out / v), **VARIANTS[v])
        run_dir = out / v
        if (run_dir / HEAD_FILE).is_file() and (run_dir / "eval.json").is_file():
            res = {"eval": json.loads((run_dir / "eval.json").read_text()), "reused": True}
        else:
            if (run_dir / HEAD_FILE).is_file():
                args = replace(args, resume=True)
            res = distill(args, dataset=ds, teacher=teacher, pool=pool)
        entry = {"eval": res.get("eval"), "final_loss": res.get("final_loss"), "seconds": res.get("distill_seconds"),
                 "args": VARIANTS[v], "file": str(run_dir / HEAD_FILE)}
        if commit_to is not None:
            entry["committed"] = str(_commit(run_dir / HEAD_FILE, Path(commit_to) / f"{v}.safetensors", teacher, entry))
        summary["variants"][v] = entry
        if progress:
            ev = entry["eval"] or {}
            print(f"[heads] {v}: held-out relative error {ev.get('rel_mse', float('nan')):.3f} "
                  f"(unweighted {ev.get('rel_mse_unweighted', float('nan')):.3f})", flush=True)
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    if commit_to is not None:
        atomic_write_text(Path(commit_to) / "heads.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _commit(src: Path, dst: Path, teacher: torch.nn.Module, entry: dict[str, Any]) -> Path:
    """The EMA head of a run as a small head file (no raw weights, no optimizer state)."""
    return export_head(src, dst, teacher=teacher, extra_record={"eval": entry.get("eval")})


def variant_args(name: str) -> dict[str, Any]:
    """The :class:`DistillArgs` of a variant as a dict (for records)."""
    return asdict(replace(DistillArgs(), **VARIANTS[name]))
