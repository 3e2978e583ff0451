r"""``python -m images bench``: network and sampler cost of a U-Net config (app. C.2.5's protocol).

For a config (default ``cifar`` on CUDA, ``tiny`` on the CPU) at a batch that fills the device
(``--batch auto``: the largest power of two whose JVP pass fits in 80 % of the GPU's memory; 64 on the
CPU), with randomly initialised weights (timing does not depend on them):

* forward and ``torch.func.jvp`` (tangents in ``x`` and ``t``) seconds per pass, their ratio, images/s;
* per sampling method at an NFE budget: the sampler's wall time, the raw network time it contains
  (``nfe * forward + jvp_passes * jvp``, from the separately timed passes) and the overhead
  ``sampler / network - 1``, images/s;

all after warm-up passes, medians of ``--repeats`` timed runs, ``torch.cuda.synchronize`` around every
timed region on CUDA.  fp32 throughout; on CUDA the whole set runs twice, TF32 off and TF32 on
(``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32``), reported apart.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .checkpoint import atomic_write_text
from .sampling import canonical, initial_noise, method_available, run_sampler, steps_for_budget
from .unet import UNet, float32_unet, get_config

__all__ = ["run_bench", "auto_batch", "BENCH_METHODS"]

BENCH_METHODS = ("ddim", "genie", "s-pndm", "dpm-solver++2m", "deis", "unipc")

_SHAPES = {"tiny": (1, 16), "small": (3, 32), "cifar": (3, 32)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def auto_batch(model: UNet, device: torch.device, start: int = 16, limit: int = 4096, fraction: float = 0.8) -> int:
    """Largest power-of-two batch whose JVP pass (the costliest pass of GENIE) fits in ``fraction`` of the GPU."""
    if device.type != "cuda":
        return 64
    cfg = model.config
    total = torch.cuda.get_device_properties(device).total_memory
    best, b = start, start
    while b <= limit:
        try:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            x = torch.randn(b, cfg.in_channels, cfg.resolution, cfg.resolution, device=device)
            t = torch.full((b,), 0.5, device=device)
            with torch.no_grad():
                torch.func.jvp(lambda a, s: model(a, s), (x, t), (torch.randn_like(x), torch.ones_like(t)))
            _sync(device)
            peak = torch.cuda.max_memory_allocated(device)
            del x, t
            if peak > fraction * total:
                break
            best = b
            b *= 2
        except torch.cuda.OutOfMemoryError:
            break
    torch.cuda.empty_cache()
    return best


def _one_setting(model: UNet, batch: int, device: torch.device, methods: Sequence[str], nfe: int, warmup: int,
                 repeats: int, sampler_repeats: int) -> dict[str, Any]:
    cfg = model.config
    x = torch.randn(batch, cfg.in_channels, cfg.resolution, cfg.resolution, device=device)
    v = torch.randn_like(x)
    t = torch.full((batch,), 0.5, device=device)
    with torch.no_grad():
        fwd = _timed(lambda: model(x, t), device, warmup, repeats)
        jvp = _timed(lambda: torch.func.jvp(lambda a, s: model(a, s), (x, t), (v, torch.ones_like(t))), device,
                     warmup, repeats)
    res: dict[str, Any] = {"forward_s": fwd, "jvp_s": jvp, "jvp_over_forward": jvp / fwd,
                           "forward_images_per_s": batch / fwd, "methods": []}
    res.update(_head_figures(model, batch, device, warmup, repeats))
    x1 = initial_noise(batch, (cfg.in_channels, cfg.resolution, cfg.resolution), 0, dtype=torch.float32, device=device)
    for m in methods:
        if not method_available(m):
            res["methods"].append({"method": m, "status": "skipped: not in taylorsolve.diffusion.sample yet"})
            continue
        steps = steps_for_budget(m, nfe)
        info: dict[str, Any] = {}

        def go() -> None:
            r = run_sampler(model, x1, m, steps)
            info.update(nfe=r.nfe, jvp_passes=r.jvp_passes)

        wall = _timed(go, device, 1, sampler_repeats)
        net = info["nfe"] * fwd + info["jvp_passes"] * jvp
        res["methods"].append({"method": canonical(m), "steps": steps, "nfe": info["nfe"], "jvp_passes": info["jvp_passes"],
                               "sampler_s": wall, "network_s": net, "overhead": wall / net - 1.0,
                               "images_per_s": batch / wall})
    return res


def _head_figures(model: UNet, batch: int, device: torch.device, warmup: int, repeats: int) -> dict[str, Any]:
    """The prediction head's overhead (app. C.2.5: the network alone against network plus head, ``warmup``
    then ``max(repeats, 50)`` timed passes) and distillation throughput: one Alg. 1 step (teacher pass,
    JVP target, head forward and backward, Adam) and one step on a precomputed target pool (head only),
    in images per second."""
    from taylorsolve.diffusion.distillation import DistillationObjective, distillation_loss

    from .distill import teacher_batch
    from .heads import attach_head, measure_overhead

    headed = attach_head(model, overhead=None)
    info = measure_overhead(headed, batch=batch, warmup=warmup, repeats=max(repeats, 50), rounds=3)
    head = headed.head.train()
    opt = torch.optim.Adam(head.parameters(), lr=1e-4)
    cfg = model.config
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((batch, cfg.in_channels, cfg.resolution, cfg.resolution), generator=gen).to(device)
    t = (1e-3 + torch.rand(batch, generator=gen, dtype=torch.float64)).clamp(max=1.0).to(device)
    obj = DistillationObjective()
    tb = teacher_batch(headed, x, t, None, obj)

    def head_step(b: dict[str, torch.Tensor]) -> None:
        k = head(b["features"], b["embedding"], x, b["eps_in"], b["gamma"])
        loss = distillation_loss(k, b["target"], b["gamma"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def full_step() -> None:
        head_step(teacher_batch(headed, x, t, None, obj))

    n = max(3, repeats // 4)
    full = _timed(full_step, device, 1, n)
    pooled = _timed(lambda: head_step(tb), device, 2, max(repeats, 10))
    headed.remove()
    return {"head": {"overhead": info["overhead"], "model_s": info["model_s"], "headed_s": info["headed_s"],
                     "head_parameters": info["head_parameters"], "distill_step_s": full,
                     "distill_images_per_s": batch / full, "pool_step_s": pooled, "pool_images_per_s": batch / pooled}}


def run_bench(config: str | None = None, *, batch: int | str = "auto", device: str = "auto",
              methods: Sequence[str] = BENCH_METHODS, nfe: int = 10, warmup: int = 5, repeats: int = 20,
              sampler_repeats: int = 3, out: Path | None = None, quiet: bool = False) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); prints a table, writes ``out/bench.json`` and ``bench.md``."""
    dev = torch.device("cuda" if (device == "auto" and torch.cuda.is_available()) else ("cpu" if device == "auto" else device))
    config = config or ("cifar" if dev.type == "cuda" else "tiny")
    ch, res = _SHAPES.get(config, (3, 32))
    torch.manual_seed(0)
    model = float32_unet(get_config(config, in_channels=ch, resolution=res)).to(dev).eval()
    b = auto_batch(model, dev) if batch == "auto" else int(batch)
    settings = [("fp32, TF32 off", False), ("fp32, TF32 on", True)] if dev.type == "cuda" else [("fp32 (CPU: TF32 n/a)", False)]
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    results: dict[str, Any] = {"config": config, "parameters": model.num_parameters(), "batch": b, "device": str(dev),
                               "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
                               "threads": torch.get_num_threads(), "torch": torch.__version__, "nfe": nfe,
                               "warmup": warmup, "repeats": repeats, "settings": {}}
    t0 = time.perf_counter()
    try:
        for name, tf32 in settings:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            results["settings"][name] = _one_setting(model, b, dev, methods, nfe, warmup, repeats, sampler_repeats)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    results["seconds"] = time.perf_counter() - t0
    text = _format(results)
    if not quiet:
        print(text)
    if out is not None:
        out = Path(out)
        atomic_write_text(out / "bench.json", json.dumps(results, indent=2) + "\n")
        atomic_write_text(out / "bench.md", text)
    return results


def _format(r: dict[str, Any]) -> str:
    lines = [f"config {r['config']} ({r['parameters'] / 1e6:.2f} M parameters), batch {r['batch']}, {r['device']} "
             f"({r['device_name']}), {r['threads']} CPU threads, torch {r['torch']}; sampler NFE budget {r['nfe']}", ""]
    for name, s in r["settings"].items():
        lines += [f"{name}: forward {s['forward_s'] * 1e3:.2f} ms ({s['forward_images_per_s']:.0f} images/s), "
                  f"jvp {s['jvp_s'] * 1e3:.2f} ms (= {s['jvp_over_forward']:.2f} forward passes)", ""]
        h = s.get("head")
        if h:
            lines += [f"prediction head ({h['head_parameters']:,} parameters): overhead {100 * h['overhead']:.2f} % "
                      f"({h['model_s'] * 1e3:.2f} ms network, {h['headed_s'] * 1e3:.2f} ms with the head); distillation "
                      f"{h['distill_images_per_s']:.0f} images/s with fresh JVP targets, {h['pool_images_per_s']:.0f} "
                      f"images/s on a target pool", ""]
        lines += ["| method | steps | NFE | JVP passes | sampler s | network s | overhead | images/s |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for m in s["methods"]:
            if "status" in m:
                lines.append(f"| {m['method']} | {m['status']} |||||||")
                continue
            lines.append(f"| {m['method']} | {m['steps']} | {m['nfe']} | {m['jvp_passes']} | {m['sampler_s']:.4f} | "
                         f"{m['network_s']:.4f} | {100 * m['overhead']:+.1f} % | {m['images_per_s']:.1f} |")
        lines.append("")
    return "\n".join(lines)
