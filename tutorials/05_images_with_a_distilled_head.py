# %% [markdown]
# # 05 · Images with a distilled head
#
# Tutorial 04 distilled GENIE's derivative head on a toy MLP. This one does it on images, with the
# project's own U-Net: the small digits model committed with the repository (16x16 greyscale digits,
# 0.77 M parameters), from the checkpoint to GENIE with a distilled head, on a CPU, in about a minute.
#
# 1. the committed model, and the **hook adapter** that puts a head on it without editing it (Fig. 4);
# 2. the head's architecture (app. C.2.1) and its mixed output (eq. (14));
# 3. the distillation target $d\epsilon_\theta/d\gamma$ (eq. (11)-(12)), checked against a finite difference
#    along the DDIM ODE;
# 4. a few hundred distillation steps (Alg. 1, loss eq. (15)) and the held-out error by noise level;
# 5. the committed, fully distilled head;
# 6. the head's overhead and the NFE budget rule of sec. 5;
# 7. DDIM, GENIE (head), GENIE (autodiff) and DPM-Solver++(2M) at equal NFE against a high-accuracy
#    solution of the same ODE, and sample grids;
# 8. the full commands, and an honest reading.
#
# Exercises with checked solutions are at the end. Everything runs on one CPU thread.

# %%
import json
import math
import tempfile
from copy import deepcopy
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from images import CHECKPOINT_DIR, DEFAULT_DIGITS_CHECKPOINT
from images.checkpoint import load_model
from images.data import load_dataset
from images.distill import DistillArgs, distill, evaluate_head
from images.heads import attach_head, measure_overhead, read_head_metadata
from images.sampling import diffusion_model
from taylorsolve.diffusion import eps_function, sample
from taylorsolve.diffusion.distillation import combine_outputs, derivative_targets, mixed_coefficients

torch.manual_seed(0)
torch.set_num_threads(1)         # small convolutions: one thread, deterministic
plt.rcParams["figure.dpi"] = 80  # modest PNGs in the committed notebook
F64 = torch.float64


def show_images(ax, x, title=None):
    """A row of images ``[n, 1, 16, 16]`` in [-1, 1] as one strip."""
    x = x.detach().double().clamp(-1, 1)[:, 0]
    ax.imshow(torch.cat(list(x), dim=1).numpy(), cmap="gray", vmin=-1, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=9)


# %% [markdown]
# ## 1. The committed model, and a head attached by hooks
#
# `images/checkpoints/digits_tiny/model.safetensors` holds the EMA weights of a `tiny` U-Net (DDPM++
# style: residual blocks, GroupNorm, attention at 8x8) trained for 3,000 steps by denoising score matching
# (eq. (7)) on scikit-learn's digits, resized to 16x16. It predicts $\epsilon_\theta(x_t, t)$ for continuous
# $t \in (0, 1]$ on the linear VP schedule, and it is frozen from here on.

# %%
model = load_model(DEFAULT_DIGITS_CHECKPOINT).eval().requires_grad_(False)
cfg = model.config
print(f"U-Net '{cfg.name}': {sum(p.numel() for p in model.parameters()):,} parameters, "
      f"{cfg.in_channels}x{cfg.resolution}x{cfg.resolution} images, channels {cfg.ch} x {cfg.ch_mult}, "
      f"noise conditioning {cfg.conditioning}")
dataset = load_dataset("digits")
x_held, _ = dataset.held_out()
print(f"digits: {x_held.shape[0]} held-out images of shape {tuple(x_held.shape[1:])}, values in [-1, 1]")
assert x_held.min() >= -1 and x_held.max() <= 1

# %% [markdown]
# GENIE's head (sec. 3.1, Fig. 4) is a small network that reads what the U-Net computed anyway, its
# **last decoder feature map** and its **time embedding**, together with $x_t$ and $\epsilon_\theta$, and
# predicts $d\epsilon_\theta/d\gamma$. Rather than rewriting the U-Net to return its features,
# `attach_head` registers two PyTorch *forward hooks*: one on the module `last_features` (an identity layer
# just before the U-Net's output convolution; its output is the feature map $[B, 16, 16, 16]$) and one on
# `embedding` (the noise-level embedding $[B, 128]$). During the network's own forward pass the hooks copy
# those two tensors aside; nothing in the network is edited, and the hooks record only while the headed
# model is calling. The same adapter works for a diffusers `UNet2DModel` (preset hooks on `conv_norm_out`
# and `time_embedding`) or any network whose two modules you name.
#
# `headed.net(x, t)` takes continuous float64 times $t$ of shape $[B]$ and returns the pair
# $(\epsilon_\theta, k_\psi)$ from **one** U-Net pass plus the head:

# %%
headed_new = attach_head(model, overhead=None)   # a fresh, untrained head; no overhead measured yet
print(headed_new)
x0 = x_held[:8]
t = torch.full((8,), 0.3, dtype=F64)
schedule = headed_new.process.schedule
noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
x_t = (schedule.alpha(t).view(-1, 1, 1, 1) * x0 + schedule.sigma(t).view(-1, 1, 1, 1) * noise).float()

with torch.no_grad():
    eps, k = headed_new.net(x_t, t)
    pred, eps_f, features, embedding = headed_new.features(x_t, t)     # what the hooks captured
print(f"eps {tuple(eps.shape)}, k {tuple(k.shape)}; captured features {tuple(features.shape)}, "
      f"embedding {tuple(embedding.shape)}")
with torch.no_grad():
    eps_plain = model(x_t, t.float())                              # the network on its own
assert torch.equal(eps, eps_plain)      # the hooks do not change the network's output
print(f"untrained head: |k| / |eps| = {float(k.norm() / eps.norm()):.1e}")
assert float(k.norm() / eps.norm()) < 0.05   # it starts near k = 0, i.e. GENIE starts as DDIM

# %% [markdown]
# ## 2. The head and its mixed output (app. C.2.1, eq. (14))
#
# The head follows app. C.2.1: the features (group-normalised), $x_t$ and $\epsilon_\theta$ concatenated,
# a 3x3 convolution, one residual block of the U-Net's own kind conditioned on the time embedding,
# GroupNorm and SiLU, and a 3x3 convolution to **three** output images $k^{(1)}, k^{(2)}, k^{(3)}$. These
# are combined with the prefactors of the **mixed parameterisation**, eq. (14):
#
# $$ k_\psi = -\frac{1}{\gamma}\, k^{(1)} + \frac{\gamma}{1+\gamma^2}\, k^{(2)} + \frac{1}{\gamma(1+\gamma^2)}\, k^{(3)}
#    \;\approx\; \frac{d\epsilon_\theta}{d\gamma}, $$
#
# the $\gamma$-dependence of the three terms of eq. (12) for data that is a single point (eq. (63)-(65),
# derived in tutorial 04), so that each $k^{(i)}$ is of order one at every noise level. The prefactors
# are `mixed_coefficients(gamma)`; `combine_outputs` applies them to the head's raw output:

# %%
head = headed_new.head
print(f"head: {head.num_parameters():,} parameters ({100 * head.num_parameters() / 769361:.1f} % of the U-Net)")
print(head.config)
for tv in (0.001, 0.01, 0.1, 0.5, 1.0):
    g = schedule.gamma(torch.tensor(tv, dtype=F64))
    c1, c2, c3 = mixed_coefficients(g)
    print(f"t = {tv:5.3f}  gamma = {float(g):9.4f}   prefactors {float(c1):+11.4f} {float(c2):+9.4f} {float(c3):+11.4f}")

with torch.no_grad():
    raw = head.raw(features, embedding, x_t, eps)                  # [B, 3, 16, 16]: k^(1), k^(2), k^(3)
gamma_t = schedule.gamma(t)
assert raw.shape[1] == 3
assert torch.allclose(combine_outputs(raw, gamma_t), k, rtol=1e-5, atol=1e-7)

# %% [markdown]
# ## 3. The distillation target: one JVP, checked by a finite difference
#
# In the DDIM variables $\bar x = x_t/\alpha_t$, $\gamma = \sigma_t/\alpha_t$ the probability-flow ODE is
# $d\bar x/d\gamma = \epsilon_\theta$ (eq. (6)). Along it $x_t$ and $t$ move together, with (VP, eq. (11))
#
# $$ \frac{dx_t}{d\gamma} = \frac{\epsilon_\theta}{\sqrt{1+\gamma^2}} - \frac{\gamma}{1+\gamma^2}\,x_t, \qquad \frac{dt}{d\gamma} = \Big(\frac{d\gamma}{dt}\Big)^{-1}, $$
#
# and the head's target is the total derivative (eq. (12))
#
# $$ \frac{d\epsilon_\theta}{d\gamma} = \frac{\partial\epsilon_\theta}{\partial x_t}\frac{dx_t}{d\gamma} + \frac{\partial\epsilon_\theta}{\partial t}\frac{dt}{d\gamma}, $$
#
# which is *one* forward-mode JVP of $\epsilon_\theta(x, t)$ with the tangent pair $(dx_t/d\gamma, dt/d\gamma)$:
# `derivative_targets` calls `torch.func.jvp` once. To check it without autodiff, step along the ODE:
# $\bar x(\gamma \pm h) = \bar x \pm h\,\epsilon_\theta + \tfrac{h^2}{2}\,\frac{d\epsilon_\theta}{d\gamma} + O(h^3)$, so the points
# $x_\pm = \alpha(\gamma\pm h)\,(\bar x \pm h\epsilon_\theta)$ are off the trajectory by the *same*
# $O(h^2)$ on both sides, which cancels in the central difference
# $[\epsilon_\theta(x_+, \gamma + h) - \epsilon_\theta(x_-, \gamma - h)]/2h$: its error is $O(h^2)$. We use a
# float64 copy of the network so that rounding does not hide that law.

# %%
model64 = deepcopy(model).double()
eps64 = eps_function(diffusion_model(model64))     # eps(x, t) through the diffusion layer's boundary
x0_64 = x_held[:8].double()
rel_steps = (1e-1, 1e-2, 1e-3)
fd_error = {}
for tv in (0.02, 0.2, 0.8):
    tt = torch.full((8,), tv, dtype=F64)
    xt = schedule.alpha(tt).view(-1, 1, 1, 1) * x0_64 + schedule.sigma(tt).view(-1, 1, 1, 1) * noise.double()
    tg = derivative_targets(eps64, xt, tt, process=headed_new.process, module=model64)   # eq. (12), one JVP
    g = tg.gamma
    xbar = xt / schedule.alpha(tt).view(-1, 1, 1, 1)
    fd_error[tv] = []
    for r in rel_steps:
        h = r * g
        ends = []
        for sign in (+1, -1):
            g_s = g + sign * h
            t_s = schedule.t_from_gamma(g_s)
            x_s = schedule.alpha(t_s).view(-1, 1, 1, 1) * (xbar + (sign * h).view(-1, 1, 1, 1) * tg.eps)
            ends.append(eps64(x_s, t_s))
        fd = (ends[0] - ends[1]) / (2 * h).view(-1, 1, 1, 1)
        fd_error[tv].append(float((fd - tg.d1).norm() / tg.d1.norm()))
    print(f"t = {tv:4.2f}: |finite difference - JVP| / |JVP| = " + ", ".join(
        f"{e:.1e} (h = {r:g} gamma)" for e, r in zip(fd_error[tv], rel_steps)))
    for a, b in zip(fd_error[tv], fd_error[tv][1:]):
        assert 50 < a / b < 200          # the difference falls as h^2: the JVP is the derivative along the ODE

# %% [markdown]
# Each tenfold smaller step shrinks the difference a hundredfold, at every noise level: the one-JVP target
# is the derivative of $\epsilon_\theta$ along the model's ODE. (This relies on the model being smooth in
# $t$: its noise input is $\log\gamma_t$. With a high-frequency sinusoidal embedding of $t$ the derivative
# describes wiggles finer than any solver step; the repository README compares the two.)
#
# The JVP needs $\epsilon_\theta$ first (it is part of the tangent), so GENIE with autodiff pays two
# sequential passes per step and more: on this CPU one JVP pass of the U-Net costs about 5.4 forward passes
# (`python -m images bench`). The head replaces it by a few convolutions.
#
# ## 4. A few hundred distillation steps (Alg. 1)
#
# Alg. 1 with the loss of eq. (15): draw a training image $x_0$, a time $t$ (half uniform, half
# log-uniform on $[10^{-3}, 1]$, so the small times are seen), noise, form $x_t$; run the frozen teacher with
# the hooks recording and compute the target by the JVP above; regress the head on it with the weight
# $\gamma_t^2$, which makes the loss roughly constant over $t$ (tutorial 04, section 4). An EMA of the head's
# weights is kept and saved.
#
# `pool=256` computes 256 teacher passes and targets once and trains on minibatches of them (the
# teacher's pass and JVP are nearly all of a step's cost; the full command draws fresh ones). Run folder:
# `head.safetensors` (the head, and the optimizer state for `--resume`), `run.json`, `log.jsonl` (mean loss
# every `checkpoint_every` steps) and `eval.json`. The held-out evaluation uses digits never seen in
# training, 128 times spread evenly in $\log t$.

# %%
workdir = tempfile.TemporaryDirectory()
run_dir = Path(workdir.name) / "head"
args = DistillArgs(out=str(run_dir), steps=300, batch_size=32, pool=256, lr=3e-3, threads=1, progress=False,
                   eval_samples=128, checkpoint_every=20)
res = distill(args, dataset=dataset, teacher=model)
log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
print(f"{res['step']} steps, head {res['head_parameters']:,} parameters; files: {sorted(p.name for p in run_dir.iterdir())}")

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.semilogy([r["step"] for r in log], [r["loss"] for r in log], "o-", ms=3)
ax.set_xlabel("distillation step")
ax.set_ylabel(r"eq. (15) loss (mean of 20 steps)")
ax.set_title("distilling the head: 300 steps, batch 32")
plt.show()
assert log[-1]["loss"] < 0.75 * log[0]["loss"]

ev_here = res["eval"]
print(f"held-out relative error: {ev_here['rel_mse']:.3f} (gamma^2-weighted), {ev_here['rel_mse_unweighted']:.3f} "
      "(unweighted); a zero head scores 1")
for band in ev_here["bands"]:
    print(f"  t in [{band['lo']:g}, {band['hi']:g}): {band['rel_mse']:.3f}")
assert ev_here["rel_mse"] < 0.5
assert all(b["rel_mse"] < 0.9 for b in ev_here["bands"])

# %% [markdown]
# The loss is still falling after 300 steps; the committed head below ran 3,000 steps of batch 64.
#
# The relative error is $\sum \gamma^2\|k_\psi - d\epsilon_\theta/d\gamma\|^2 / \sum \gamma^2 \|d\epsilon_\theta/d\gamma\|^2$
# over held-out draws. It is lowest near the data ($t < 0.01$) and highest at large $t$, where the target
# is smooth but small and the head's features say least about it. Note what a squared relative error means
# for a solver: the head's *amplitude* error is its square root, so 0.5 in a band means the head's
# derivative is about 70 % off there, and a GENIE step in that band removes only about 30 % of DDIM's
# second-order local error. Here is what the head predicts for three held-out digits at three noise
# levels:

# %%
head_now = attach_head(model, head=res["checkpoint"], overhead=None)   # the EMA head, read back from its file
fig, axes = plt.subplots(3, 5, figsize=(8, 5.2))
for row, tv in enumerate((0.01, 0.1, 0.6)):
    tt = torch.full((3,), tv, dtype=F64)
    xt = (schedule.alpha(tt).view(-1, 1, 1, 1) * x_held[8:11] + schedule.sigma(tt).view(-1, 1, 1, 1) * noise[:3]).float()
    eps_t, k_t = head_now.net(xt, tt)
    target = derivative_targets(eps_function(head_now.base), xt, tt, process=head_now.process, eps=eps_t,
                                module=model).d1
    scale = float(target.abs().max())
    panels = ((xt, r"$x_t$", 1.0), (eps_t, r"$\epsilon_\theta$", 2.5), (target, r"target $d\epsilon_\theta/d\gamma$", scale),
              (k_t, r"head $k_\psi$", scale), (k_t - target, "head - target", scale))
    for col, (img, name, s) in enumerate(panels):
        ax = axes[row, col]
        ax.imshow(img[0, 0].detach().numpy(), cmap="RdBu_r", vmin=-s, vmax=s)
        ax.set_xticks([])
        ax.set_yticks([])
        if row == 0:
            ax.set_title(name, fontsize=9)
    axes[row, 0].set_ylabel(f"t = {tv}", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. The committed, fully distilled head
#
# `python -m images heads` distils the standard head for 3,000 steps (batch 64, a pool of 8,192 targets)
# together with the ablations of Table 2, and the project commits the standard one next to the model,
# `images/checkpoints/digits_tiny/heads/standard.safetensors`. A head file records the teacher's
# fingerprint (a SHA-256 of its weights), the hooks and the distillation record; `attach_head` refuses a
# head distilled for another teacher. If the file is present we evaluate it on the same held-out draws and
# sample with it below; otherwise the head distilled above is used.

# %%
committed_path = CHECKPOINT_DIR / "digits_tiny" / "heads" / "standard.safetensors"
heads = {"head distilled here (300 steps)": head_now}
held_out = {"head distilled here (300 steps)": ev_here}
if committed_path.is_file():
    record = read_head_metadata(committed_path)["record"]
    dargs = record["distill_args"]
    name = f"committed head ({record['step']} steps)"
    heads[name] = attach_head(model, head=committed_path, overhead=None)
    held_out[name] = evaluate_head(heads[name], dataset, samples=128)
    print(f"found the committed head: {record['step']} steps, batch {dargs['batch_size']}, pool {dargs['pool']}, "
          f"lr {dargs['lr']}")
else:
    print("no committed head in this checkout: using the head distilled above")
for name, ev in held_out.items():
    print(f"{name:34s} relative error {ev['rel_mse']:.3f}; by band of t: "
          + ", ".join(f"{b['rel_mse']:.3f}" for b in ev["bands"]))
head_name = list(heads)[-1]          # the committed head if there is one
headed = heads[head_name]
print(f"sampling below with the {head_name}")

# %% [markdown]
# ## 6. The head's overhead and the NFE budget (sec. 5)
#
# A GENIE step with a head costs one U-Net pass plus the head: $1 + o$ evaluations, $o$ the head's
# **overhead**. `measure_overhead` times the network alone and the network with the hooks and the head,
# alternating, and keeps the fastest of each (app. C.2.5). On the paper's CIFAR-10 U-Net (Table 5) the
# head costs 1.47 %; our head is small (1.3 % of the parameters), but so is the `tiny` U-Net, and the head
# works at full resolution: on the project's CPU we measured 8-15 % (batch 16-64, one thread). Timings on
# a shared machine vary from run to run, so this notebook *charges* a fixed 10 %, set through
# `headed.overhead` (slightly in the head's favour: at 15 % it would get 17 evaluations instead of 18 at
# $N = 20$); set it to your own measurement and rerun.
#
# Sec. 5 compares solvers at equal cost: for a budget of $N$ evaluations GENIE with a head gets
# $\mathrm{round}(N/(1+o))$ (halves rounded up); GENIE with autodiff is charged $o = 1$ (the JVP as one more pass, the paper's
# rule; on this CPU it really costs about 5.4). `sample(..., nfe=N)` applies the rule and reports it in
# `stats`:

# %%
measured = measure_overhead(headed, batch=32, repeats=5, rounds=2)
print(f"measured now (batch 32, one thread): U-Net {1e3 * measured['model_s']:.1f} ms, with head "
      f"{1e3 * measured['headed_s']:.1f} ms per call: overhead {100 * measured['overhead']:.0f} %")
OVERHEAD = 0.10
for h in heads.values():
    h.overhead = OVERHEAD

x1 = torch.randn(16, 1, 16, 16, dtype=F64, generator=torch.Generator().manual_seed(0))   # initial noise, float64
print(f"{'NFE budget N':>13s} {'eval budget':>12s} {'GENIE steps':>12s} {'NFE used':>9s}")
for n in (5, 10, 15, 20):
    st = sample(headed, x1[:2], nfe=n, method="genie", derivative="head").stats
    print(f"{st.nfe_budget:13d} {st.eval_budget:12d} {st.steps:12d} {st.nfe:9d}")
    assert st.eval_budget == math.floor(n / (1 + OVERHEAD) + 0.5) and st.nfe <= st.eval_budget

# %% [markdown]
# At 10 % the head costs one step at $N = 10$ (9 evaluations) and two at $N = 20$; at the paper's 1.47 % it
# would be free up to $N = 34$ (tutorial 04, exercise 2).
#
# ## 7. Equal NFE: error against the model's own ODE solution
#
# Every sampler here solves the same ODE, the model's probability-flow ODE, from the same noise $x_1$. So
# the cleanest measure of a solver is its distance to a very accurate solution of that ODE: DPM-Solver-3
# with 100 log-SNR steps (300 evaluations). We report the per-image RMSE at $t = 10^{-3}$, averaged over
# 16 images. Methods: DDIM and GENIE on the quadratic time grid (as in the paper), GENIE with the head
# (overhead charged) and with the autodiff derivative (JVP charged as one evaluation),
# and DPM-Solver++(2M), a second-order multistep method that needs no derivative, on its log-SNR grid.

# %%
model_dm = diffusion_model(model)
reference = sample(model_dm, x1, 100, method="dpm-solver-3", grid="logsnr").x
check = sample(model_dm, x1, 50, method="dpm-solver-3", grid="logsnr").x


def rmse(x):
    """Per-image RMSE to the reference solution, averaged over the images."""
    return float(((x - reference) ** 2).flatten(1).mean(1).sqrt().mean())


print(f"reference: 100 steps vs 50 steps differ by {rmse(check):.1e} (per-image RMSE)")
assert rmse(check) < 1e-4

nfes = (5, 10, 15, 20)
methods = {"DDIM": (model_dm, dict(method="ddim", grid="quadratic"))}
for name, h in heads.items():
    methods[f"GENIE, {name}"] = (h, dict(method="genie", derivative="head", grid="quadratic"))
methods["GENIE, autodiff (JVP = 1 NFE)"] = (model_dm, dict(method="genie", derivative="autodiff", grid="quadratic",
                                                           overhead=1.0))
methods["DPM-Solver++(2M)"] = (model_dm, dict(method="dpm-solver++2m", grid="logsnr"))
errors, steps_used, at10 = {}, {}, {}
for name, (net, kw) in methods.items():
    errors[name], steps_used[name] = [], []
    for n in nfes:
        out = sample(net, x1, nfe=n, **kw)
        assert out.stats.nfe <= n
        errors[name].append(rmse(out.x))
        steps_used[name].append(out.stats.steps)
        if n == 10:
            at10[name] = out.x
print(f"{'per-image RMSE to the reference (steps)':42s}" + "".join(f"{'NFE ' + str(n):>15s}" for n in nfes))
for name in methods:
    print(f"{name:42s}" + "".join(f"{e:10.4f} ({s:2d})" for e, s in zip(errors[name], steps_used[name])))

# %%
fig, ax = plt.subplots(figsize=(6.5, 4.2))
for name, errs in errors.items():
    style = "o-" if name == "DDIM" else "s-" if "head" in name else "^:" if "autodiff" in name else "v--"
    ax.semilogy(nfes, errs, style, ms=4, label=name)
ax.set_xticks(nfes)
ax.set_xlabel("NFE (overhead charged)")
ax.set_ylabel("per-image RMSE to the reference")
ax.set_title("digits U-Net: solver error at equal NFE")
ax.legend(fontsize=7)
plt.show()

genie_head = errors[f"GENIE, {head_name}"]
i10, i20 = nfes.index(10), nfes.index(20)
assert errors["DPM-Solver++(2M)"][i10] < 0.7 * errors["DDIM"][i10]
assert errors["GENIE, autodiff (JVP = 1 NFE)"][i20] < errors["DDIM"][i20]
assert all(g < 1.3 * d for g, d in zip(genie_head, errors["DDIM"]))              # the head ties DDIM ...
assert all(g > p for g, p in zip(genie_head[1:], errors["DPM-Solver++(2M)"][1:]))  # ... and loses to DPM++(2M)

# %% [markdown]
# The samples at NFE 10 from the same noise (first 8 of the 16), and the reference:

# %%
rows = [("reference (300 NFE)", reference)] + [(name, at10[name]) for name in methods]
fig, axes = plt.subplots(len(rows), 1, figsize=(7.5, 0.75 * len(rows)))
for ax, (name, xs) in zip(axes, rows):
    show_images(ax, xs[:8], name if name.startswith("reference") else f"{name}\nRMSE {rmse(xs):.3f}")
plt.tight_layout()
plt.show()

# %% [markdown]
# **The honest reading.**
#
# * **GENIE with the head at best ties DDIM.** Per *step* the committed head helps a little (5-10 % less
#   error than DDIM, exercise 3); per NFE, after its 10 % overhead, it ties DDIM from NFE 15 and is a little
#   behind at NFE 5 and 10. The 300-step head of section 4 is 9-18 % behind DDIM: ten times more
#   distillation lowered the held-out error from about 0.30 to 0.20 but the sampling error only by a few
#   percent. The reason is the table of section 5: on the large steps at large $t$ the head's derivative is
#   still 60-70 % off in amplitude, so the Taylor term removes only a fraction of DDIM's error there.
# * **The exact derivative does work**: GENIE with autodiff has about a third of DDIM's error at *equal
#   steps* (exercise 3, and the README's table), and even charged 100 % it overtakes DDIM from NFE 15 on. On
#   this CPU its JVP really costs 5.4 evaluations, which would put it far behind.
# * **DPM-Solver++(2M)**, second order with no derivative at all (it reuses the previous step's
#   $\epsilon_\theta$), is the best method here at every budget, with a quarter of DDIM's error at NFE 20.
# * The paper's gains depend on a head that is both cheap (1.47 % on its CIFAR-10 U-Net) and accurate;
#   ours is cheap enough but not accurate enough at large $t$ after a few minutes of CPU distillation.
#   The full-size numbers, the ablations and the head targets are in the repository README.
#
# ## 8. The full commands
#
# ```bash
# python -m images distill --steps 3000 --out runs/head            # distil a head (Alg. 1) on the committed model
# python -m images distill --steps 6000 --out runs/head --resume   # continue it (exact resume)
# python -m images heads                       # the standard head, Table 2's ablations, a second-order head
# python -m images all                         # every solver at equal NFE on the committed model, heads included
# python -m images bench --config cifar        # on a GPU: forward/JVP time, head overhead, distillation throughput
# ```
#
# `python -m images bench --config cifar` builds a U-Net of the paper's CIFAR-10 shape (108 M parameters)
# and measures, among other things, the head's overhead on it: the number to compare with Table 5's
# 1.47 %, which a CPU and a 0.77 M-parameter U-Net cannot reproduce.
#
# ## Exercises
#
# Try each one before opening its solution; the cells after them check the answers with `assert`s.
#
# **Exercise 1 (an NFE budget by hand).** With the charged overhead of 10 %, how many evaluations and
# GENIE steps does a budget of $N = 25$ buy (no final denoising step)? And GENIE with autodiff at $o = 1$?
# Check with `sample(..., nfe=25)`.
#
# <details><summary>Solution</summary>
#
# With a head: $\mathrm{round}(25/1.1) = \mathrm{round}(22.7) = 23$ evaluations, one per step: 23 steps.
# With autodiff: $25/2 = 12.5$, and the rule rounds halves *up* (`floor(x + 1/2)`, not Python's `round`,
# which would give 12): 13 evaluations, 13 steps, each one evaluation plus one JVP.
# </details>

# %%
st_head = sample(headed, x1[:2], nfe=25, method="genie", derivative="head").stats
st_ad = sample(model_dm, x1[:2], nfe=25, method="genie", derivative="autodiff", overhead=1.0).stats
print(f"head: eval budget {st_head.eval_budget}, {st_head.steps} steps; autodiff: eval budget {st_ad.eval_budget}, "
      f"{st_ad.steps} steps, {st_ad.jvp_passes} JVP passes")
assert (st_head.eval_budget, st_head.steps) == (23, 23)
assert (st_ad.eval_budget, st_ad.steps) == (13, 13)

# %% [markdown]
# **Exercise 2 (the mixed prefactors sum to zero).** Show that the three prefactors of eq. (14) sum to zero
# for every $\gamma$. What does a head whose three outputs are equal, $k^{(1)} = k^{(2)} = k^{(3)}$, predict,
# and why is that right for data that is a single point (eq. (63)-(65))? Check numerically with
# `mixed_coefficients` and `combine_outputs`.
#
# <details><summary>Solution</summary>
#
# $-\frac1\gamma + \frac{\gamma}{1+\gamma^2} + \frac{1}{\gamma(1+\gamma^2)} = \frac{-(1+\gamma^2) + \gamma^2 + 1}{\gamma(1+\gamma^2)} = 0.$
# So equal outputs give $k_\psi = 0$. For a single data point at 0 the three terms of eq. (12) are these
# prefactors times the same field $-x_t/\sigma_t$ (eq. (63)-(65)), so $d\epsilon/d\gamma = 0$: $\epsilon = x_t/\sigma_t$
# is constant along the ODE and DDIM is exact. The head's outputs only need to *depart* from each other
# where the data is not a point; each stays of order one, which is what makes it learnable at all $t$.
# </details>

# %%
gammas = schedule.gamma(torch.logspace(-3, 0, 50, dtype=F64))
c1, c2, c3 = mixed_coefficients(gammas)
print(f"max |sum of prefactors| / max |prefactor| over t in [1e-3, 1]: {float((c1 + c2 + c3).abs().max() / c1.abs().max()):.1e}")
assert torch.allclose(c1 + c2 + c3, torch.zeros_like(c1), atol=1e-9 * float(c1.abs().max()))
same = torch.randn(4, 1, 16, 16, dtype=F64, generator=torch.Generator().manual_seed(3))
k_same = combine_outputs(torch.cat([same, same, same], dim=1), gammas[::13])
assert float(k_same.abs().max()) < 1e-9 * float(c1.abs().max())

# %% [markdown]
# **Exercise 3 (halving the step).** DDIM is Euler's method on the DDIM ODE. Predict how its global error
# changes from 10 to 20 steps on the same quadratic grid, and how GENIE's with the exact (autodiff)
# derivative changes. Check against the reference, and compare GENIE with the head at equal steps (not
# equal NFE).
#
# <details><summary>Solution</summary>
#
# Euler is first order: halving every step halves the global error (ratio 2). GENIE is a second-order
# Taylor method (eq. (9)): ratio $2^2 = 4$ asymptotically. Measured: DDIM about 2.1, GENIE about 3.3: DDIM
# is already in its asymptotic regime, GENIE not quite (at 10 steps the first steps from $t = 1$ are still
# large). At equal steps GENIE with the exact derivative has about a third of DDIM's error at 10 steps,
# and a quarter at 20. GENIE with the head is only 5-10 % better than DDIM at equal steps, and its ratio
# is about DDIM's: with its derivative 60-70 % off in amplitude where the steps are large, it behaves like
# a first-order method with a slightly smaller constant.
# </details>

# %%
ratio, e10 = {}, {}
for name, net, kw in (("DDIM", model_dm, dict(method="ddim")),
                      ("GENIE (autodiff)", model_dm, dict(method="genie", derivative="autodiff")),
                      ("GENIE (head)", headed, dict(method="genie", derivative="head"))):
    e10[name] = rmse(sample(net, x1, 10, grid="quadratic", **kw).x)
    e20 = rmse(sample(net, x1, 20, grid="quadratic", **kw).x)
    ratio[name] = e10[name] / e20
    print(f"{name:17s} 10 steps {e10[name]:.4f}, 20 steps {e20:.4f}: ratio {ratio[name]:.2f}")
assert 1.6 < ratio["DDIM"] < 2.6
assert ratio["GENIE (autodiff)"] > 2.6
assert e10["GENIE (autodiff)"] < 0.5 * e10["DDIM"]
assert e10["GENIE (head)"] < 1.02 * e10["DDIM"] and ratio["GENIE (head)"] < 2.6

workdir.cleanup()
