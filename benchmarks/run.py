"""Benchmarks: the package against the original tutorial's approach (``benchmarks/baseline.py``).

    SGM_DATA_DIR=../shared/data python benchmarks/run.py                      # everything, issue-sized
    SGM_DATA_DIR=../shared/data python benchmarks/run.py --only likelihood --bpd-images 16

Sections (``--only``, comma-separated):

- ``likelihood``: bits/dim of the first N test images, the tutorial's way and with ``evaluate_bpd``
  (its defaults, and again at the tutorial's tolerance), same weights, images, dequantization and
  Hutchinson noise. Reports seconds per image, score evaluations, and the bits/dim agreement.
- ``sampling``: one batch from the same latents: the tutorial's RK45 sampler, ``ode_sampler`` at
  the same tolerance, ``heun_sampler`` (deterministic and stochastic) and Euler-Maruyama.
- ``quality``: the Fréchet distance (shipped classifier's features, clipped samples, against the
  test split, as in the model card) of ``--fd-samples`` samples per sampler.
- ``training``: images per second of the tutorial's loop, of ``train`` and of
  ``train(precision="bfloat16")`` on the same batches, noise and initial weights (so the float32 loss
  curves must agree exactly, and the bfloat16 one closely), against the float32 matmul peak.
- ``notebooks``: wall time of every notebook under nbval, in quick mode and in default mode.

Every section prints a Markdown table; all numbers go to ``--json``, where each section keeps the
command and the machine state (load averages included) of the run that produced it; running some
sections replaces those and keeps the others. Machines are noisy: compare the ratios, and read
absolute times as context only.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import baseline  # noqa: E402  (benchmarks/baseline.py)

import sgm_helpers as sgm  # noqa: E402
from sgm_helpers.data import default_data_root  # noqa: E402
from sgm_helpers.evaluation import draw_samples  # noqa: E402

SECTIONS = ("likelihood", "sampling", "quality", "training", "notebooks")


# -- Helpers ------------------------------------------------------------------------------------

def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    if hasattr(os, "getloadavg"):
        info["load_average_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def table(headers, rows) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
        return str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def load_model(args, device):
    """``(score_model, sde, description)``: the shipped model, or ``--checkpoint`` (EMA weights)."""
    from sgm_helpers.pretrained import sha256_file

    if args.checkpoint:
        model, sde = sgm.load_score_checkpoint(args.checkpoint, sde=sgm.VESDE(args.sigma), which=args.weights, device=device)
        source = f"{args.checkpoint} ({args.weights} weights, sha256 {sha256_file(args.checkpoint)[:12]})"
    else:
        model, sde = sgm.load_pretrained(args.model, device=device), sgm.pretrained_sde(args.model)
        source = f"shipped model {args.model!r} (sha256 {sgm.model_info(args.model)['sha256'][:12]})"
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), sde, source


# -- Likelihood ---------------------------------------------------------------------------------

def bench_likelihood(args, model, sde, device) -> dict:
    n, batch, root = args.bpd_images, args.bpd_batch, args.data_dir
    print(f"\n## Likelihood: bits/dim of the first {n} test images, batches of {batch}", flush=True)

    def package(**kw):
        images = sgm.load_mnist(train=False, root=root, download=False)[0][:n]
        return sgm.evaluate_bpd(model, sde, images, batch_size=batch, generator=torch.Generator().manual_seed(args.seed),
                                progress=False, device=device, hutchinson="gaussian", **kw)   # the tutorial's probes

    def tutorial():
        loader = baseline.test_loader(root, n, batch, num_workers=args.baseline_workers)
        return baseline.evaluate_bpd(model, sde.sigma, loader, torch.Generator().manual_seed(args.seed), device=device)

    (bpd_b, nfe_b), sec_b = timed(tutorial, device)
    rows = {"tutorial (baseline)": dict(bpd=bpd_b.double(), nfe=nfe_b, seconds=sec_b, rtol=1e-5)}
    configs = [("evaluate_bpd (defaults)", {})]
    if args.bpd_same_tolerance:
        configs.append(("evaluate_bpd, rtol = atol = 1e-5", dict(rtol=1e-5, atol=1e-5)))
    for name, kw in configs:
        res, sec = timed(lambda: package(**kw), device)
        rows[name] = dict(bpd=res.bpd.double(), nfe=res.nfe, seconds=sec, **kw)

    out, table_rows = {}, []
    for name, r in rows.items():
        diff = r["bpd"] - bpd_b
        entry = {"seconds": r["seconds"], "seconds_per_image": r["seconds"] / n, "speedup": sec_b / r["seconds"],
                 "nfe_per_batch": r["nfe"], "bpd_mean": float(r["bpd"].mean()),
                 "bpd_stderr": float(r["bpd"].std() / math.sqrt(n)) if n > 1 else float("nan"),
                 "bpd_mean_minus_baseline": float(diff.mean()), "bpd_max_abs_diff_per_image": float(diff.abs().max()),
                 "bpd_per_image": r["bpd"].tolist()}
        out[name] = entry
        table_rows.append([name, f"{entry['seconds_per_image']:.3f}", f"{entry['speedup']:.2f}x",
                           f"{statistics.mean(r['nfe']):.0f}", f"{entry['bpd_mean']:.4f}",
                           f"{entry['bpd_mean_minus_baseline']:+.4f}", f"{entry['bpd_max_abs_diff_per_image']:.4f}"])
    print(table(["method", "s / image", "speed-up", "NFE / batch", "mean bits/dim", "Δ mean vs baseline",
                 "max |Δ| per image"], table_rows), flush=True)
    return {"images": n, "batch_size": batch, "seed": args.seed, "results": out}


# -- Sampling speed -----------------------------------------------------------------------------

def sampler_table(args):
    """name -> (description, registry name, options): every sampler runs through ``sgm.sample`` (the package's one
    registry, which also counts score evaluations). The ODE-type samplers draw their latents first from the same
    seeded generator, so they start from the same z."""
    table_ = {} if args.skip_ode else {"ode (RK45)": ("`ode_sampler`, RK45, rtol = atol = 1e-5", "ode", {})}
    for n in args.heun_steps:
        table_[f"heun {n}"] = (f"`heun_sampler`, {n} steps", "heun", {"num_steps": n})
    for n in args.churn_steps:
        churn = dict(s_churn=args.s_churn, s_tmin=args.s_tmin, s_tmax=args.s_tmax, s_noise=args.s_noise)
        table_[f"heun {n}, churn"] = (
            f"`heun_sampler`, {n} steps, s_churn={args.s_churn:g}, s_tmin={args.s_tmin:g}, s_tmax={args.s_tmax:g}, "
            f"s_noise={args.s_noise:g}", "heun", {"num_steps": n, **churn})
    for n in args.dpm_steps:
        table_[f"dpm-solver++(2m) {n}"] = (f"`dpm_solver_sampler`, {n} steps", "dpm2m", {"num_steps": n})
    for n in args.em_steps:
        table_[f"euler-maruyama {n}"] = (f"`euler_maruyama_sampler`, {n} steps", "em", {"num_steps": n})
    return table_


def bench_sampling(args, model, sde, device) -> dict:
    b = args.sample_batch
    shape = (b, 1, 28, 28)
    print(f"\n## Sampling: one batch of {b}, the same latents for the ODE samplers", flush=True)
    z = sde.prior_sampling(shape, generator=torch.Generator().manual_seed(args.seed), device=device)
    (x_b, nfe_b), sec_b = timed(lambda: baseline.ode_sampler(model, sde.sigma, z, device=device), device)
    out = {"tutorial ode_sampler (baseline)": {"seconds": sec_b, "nfe": nfe_b, "speedup": 1.0}}
    (x_p, nfe_p), sec_p = timed(lambda: sgm.sample("ode", model, sde, z=z, device=device, progress=False), device)
    out["ode_sampler (RK45, same tolerance)"] = {"seconds": sec_p, "nfe": nfe_p, "speedup": sec_b / sec_p,
                                                 "max_abs_diff_vs_baseline": float((x_p - x_b.float()).abs().max())}
    for name, (_, sampler, options) in sampler_table(args).items():
        if sampler == "ode":
            continue
        gen = torch.Generator().manual_seed(args.seed)
        (_, nfe), sec = timed(lambda: sgm.sample(sampler, model, sde, shape, generator=gen, device=device,
                                                 progress=False, **options), device)
        out[name] = {"seconds": sec, "nfe": nfe, "speedup": sec_b / sec}
    rows = [[k, v["nfe"], f"{v['seconds']:.2f}", f"{v['seconds'] / v['nfe'] * 1e3:.1f}", f"{v['speedup']:.2f}x"]
            for k, v in out.items()]
    print(table(["sampler", "NFE", "seconds / batch", "ms / NFE", "speed-up vs baseline"], rows), flush=True)
    print(f"(ode_sampler vs tutorial, same latents: max |Δ sample| = "
          f"{out['ode_sampler (RK45, same tolerance)']['max_abs_diff_vs_baseline']:.2e})", flush=True)
    return {"batch_size": b, "seed": args.seed, "results": out}


# -- Sample quality -----------------------------------------------------------------------------

def bench_quality(args, model, sde, device) -> dict:
    n, b = args.fd_samples, args.fd_batch
    print(f"\n## Sample quality: Fréchet distance of {n} samples per sampler (classifier features, clipped "
          "samples, against the test split)", flush=True)
    classifier = sgm.load_classifier(device=device)
    test_images = sgm.load_mnist(train=False, root=args.data_dir, download=False)[0]
    reference = sgm.classifier_features(classifier, test_images)
    train_images = sgm.load_mnist(train=True, root=args.data_dir, download=False)[0]
    real = train_images[torch.randperm(len(train_images), generator=torch.Generator().manual_seed(args.seed))[:n]]
    out = {"real training images": {"nfe": 0, "seconds": 0.0,
                                    **sgm.sample_quality(real, classifier, reference, clip=True).to_dict()}}
    for name, (desc, sampler, options) in sampler_table(args).items():
        options = dict(options)
        steps = options.pop("num_steps", None)
        x, nfe, sec = draw_samples(sampler, model, sde, n, steps=steps, batch_size=b, device=device, progress=False,
                                   generator=torch.Generator().manual_seed(args.seed), **options)
        nfe_per_batch = sum(nfe) / len(nfe)
        q = sgm.sample_quality(x, classifier, reference, clip=True)
        raw = sgm.frechet_distance(sgm.classifier_features(classifier, x), reference)
        out[name] = {"description": desc, "nfe_per_batch": nfe_per_batch, "seconds": sec,
                     **q.to_dict(), "frechet_distance_unclipped": raw}
        print(f"  {name}: FD {q.frechet_distance:.2f}, NFE/batch {nfe_per_batch:.0f}, {sec:.0f} s",
              flush=True)
    ref_fd = out["ode (RK45)"]["frechet_distance"] if "ode (RK45)" in out else float("nan")
    rows = [[k, f"{v['nfe_per_batch'] if 'nfe_per_batch' in v else 0:.0f}", f"{v['frechet_distance']:.2f}",
             f"{v['frechet_distance'] / ref_fd:.2f}", f"{v.get('frechet_distance_unclipped', float('nan')):.2f}",
             f"{v['confident_share']:.3f}", f"{v['seconds']:.0f}"] for k, v in out.items()]
    print(table(["sampler", "NFE", "Fréchet distance", "FD / FD(RK45)", "FD unclipped", "confident share",
                 "seconds"], rows), flush=True)
    return {"samples": n, "batch_size": b, "seed": args.seed, "results": out}


# -- Training -----------------------------------------------------------------------------------

def matmul_peak_gflops(device, size: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matrix-multiply throughput (best of ``repeats``), the ceiling for the training step."""
    a = torch.randn(size, size, device=device)
    bm = torch.randn(size, size, device=device)
    best = math.inf
    for _ in range(repeats + 1):
        _, sec = timed(lambda: a @ bm, device)
        best = min(best, sec)
    return 2 * size ** 3 / best / 1e9


def training_flops_per_image(sde, device) -> float:
    """FLOPs of one forward + backward pass of ScoreNet, per 28x28 image (``FlopCounterMode``)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = sgm.ScoreNet(sde.marginal_prob_std).to(device)
    x = torch.rand(8, 1, 28, 28, device=device)
    with FlopCounterMode(display=False) as counter:
        sgm.dsm_loss(model, x, sde.marginal_prob_std).backward()
    return counter.get_total_flops() / 8


def bench_training(args, sde, device) -> dict:
    steps, b = args.train_steps, args.train_batch
    print(f"\n## Training: {steps} steps of batch {b}, the same initial weights, batches and noise", flush=True)
    images = None
    torch.manual_seed(args.seed)
    init = sgm.ScoreNet(sde.marginal_prob_std)

    def package(precision="float32"):
        nonlocal images
        model = copy.deepcopy(init)
        if images is None:  # loading the split into memory is part of the package's approach: count it once
            images = sgm.load_mnist(train=True, root=args.data_dir, download=False)[0]
        return sgm.train(model, images, sde.marginal_prob_std, steps=steps, batch_size=b, lr=args.lr, seed=args.seed,
                         device=device, progress=False, precision=precision)

    def tutorial():
        model = copy.deepcopy(init)
        loader = baseline.train_loader(args.data_dir, b, steps, seed=args.seed, num_workers=args.baseline_workers)
        return baseline.train(model, loader, sde.marginal_prob_std, lr=args.lr, seed=args.seed, device=device)

    loops = {"tutorial (baseline)": tutorial, "train": package,
             "train(precision='bfloat16')": lambda: package("bfloat16")}
    secs = {name: [] for name in loops}
    losses = {}
    for _ in range(args.train_repeats):  # interleaved, to share the machine's noise
        for name, fn in loops.items():
            losses[name], sec = timed(fn, device)
            secs[name].append(sec)
    flops = training_flops_per_image(sde, device)
    peak = matmul_peak_gflops(device)
    out = {}
    base_ips = steps * b / min(secs["tutorial (baseline)"])
    rows = []
    for name, s in secs.items():
        ips = steps * b / min(s)
        gflops = ips * flops / 1e9
        out[name] = {"seconds": s, "images_per_second_best": ips, "images_per_second_median": steps * b / statistics.median(s),
                     "speedup": ips / base_ips, "achieved_gflops": gflops, "share_of_matmul_peak": gflops / peak,
                     "loss_mean": statistics.mean(losses[name])}
        rows.append([name, f"{ips:.0f}", f"{ips / base_ips:.2f}x", f"{gflops:.1f}", f"{100 * gflops / peak:.0f}%",
                     f"{statistics.mean(losses[name]):.3f}"])

    def agreement(ref, other):
        a, c = torch.tensor(losses[ref]), torch.tensor(losses[other])
        rel = (a - c).abs() / a.abs()
        return {"max_abs_diff": float((a - c).abs().max()), "max_rel_diff": float(rel.max()),
                "mean_rel_diff": float(rel.mean()), "mean_loss_rel_diff": float((c.mean() - a.mean()) / a.mean())}

    agree = agreement("tutorial (baseline)", "train")
    agree_bf16 = agreement("train", "train(precision='bfloat16')")
    print(table(["loop", "images / s (best)", "speed-up", "GFLOP/s", "of float32 matmul peak", "mean loss"], rows))
    print(f"(forward + backward: {flops / 1e9:.3f} GFLOP per image; float32 matmul peak measured at {peak:.0f} GFLOP/s; "
          f"loss curves, train vs baseline: max |Δ| = {agree['max_abs_diff']:.2e}, max relative "
          f"{agree['max_rel_diff']:.2e}; bfloat16 vs float32 train: max relative {agree_bf16['max_rel_diff']:.2e}, "
          f"mean relative {agree_bf16['mean_rel_diff']:.2e}, mean loss {agree_bf16['mean_loss_rel_diff']:+.2e})",
          flush=True)
    epoch_imgs = 60_000
    out["tutorial_50_epochs_minutes_at_this_speed"] = {
        name: 50 * epoch_imgs / out[name]["images_per_second_best"] / 60 for name in loops}
    return {"steps": steps, "batch_size": b, "gflop_per_image": flops / 1e9, "matmul_peak_gflops": peak,
            "loss_curves": agree, "loss_curves_bfloat16_vs_float32": agree_bf16, "results": out}


# -- Notebooks ----------------------------------------------------------------------------------

def bench_notebooks(args) -> dict:
    nb_dir = Path(args.notebooks_dir)
    notebooks = sorted(nb_dir.glob("*.ipynb"))
    print(f"\n## Notebooks under nbval ({len(notebooks)} in {nb_dir})", flush=True)
    out = {}
    for mode in args.notebook_modes:
        env = dict(os.environ, SGM_QUICK="1" if mode == "quick" else "0")
        if args.threads:  # the kernels run in subprocesses: pass the thread count on
            env["OMP_NUM_THREADS"] = str(args.threads)
        out[mode] = {}
        for nb in notebooks:
            cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q", "-p", "no:cacheprovider",
                   "-p", "no:randomly", str(nb)]
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.notebook_timeout)
                status = "passed" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
            except subprocess.TimeoutExpired:
                status = f"timed out after {args.notebook_timeout} s"
            out[mode][nb.name] = {"seconds": time.perf_counter() - t0, "status": status}
            print(f"  {mode} {nb.name}: {out[mode][nb.name]['seconds']:.0f} s, {status}", flush=True)
    rows = [[nb, *[f"{out[m][nb]['seconds']:.0f} ({out[m][nb]['status']})" for m in out]]
            for nb in (n.name for n in notebooks)]
    rows.append(["total", *[f"{sum(v['seconds'] for v in out[m].values()):.0f}" for m in out]])
    print(table(["notebook", *[f"{m} mode, s" for m in out]], rows), flush=True)
    return out


# -- Main ---------------------------------------------------------------------------------------

def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()] if text else []


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections (default: all of {SECTIONS})")
    p.add_argument("--json", type=Path, default=HERE / "results.json", help="where the numbers go")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", type=Path, default=None, help="MNIST root (default: $SGM_DATA_DIR)")
    p.add_argument("--model", default="mnist-ve25", help="shipped score model")
    p.add_argument("--checkpoint", help="use this checkpoint instead of the shipped model")
    p.add_argument("--weights", default="auto", choices=["auto", "ema", "raw"],
                   help="with --checkpoint: EMA or raw weights (auto: the EMA if there is one)")
    p.add_argument("--sigma", type=float, default=25.0, help="the checkpoint's VE SDE sigma")
    p.add_argument("--baseline-workers", type=int, default=0, help="DataLoader workers of the baseline")
    g = p.add_argument_group("likelihood")
    g.add_argument("--bpd-images", type=int, default=64)
    g.add_argument("--bpd-batch", type=int, default=32, help="batch size of both sides (tutorial: 32)")
    g.add_argument("--no-bpd-same-tolerance", dest="bpd_same_tolerance", action="store_false",
                   help="skip the evaluate_bpd run at the tutorial's tolerance")
    g = p.add_argument_group("sampling and quality")
    g.add_argument("--sample-batch", type=int, default=64, help="batch of the speed comparison (tutorial: 64)")
    g.add_argument("--heun-steps", type=int_list, default=[10, 18], help="deterministic heun_sampler step counts")
    g.add_argument("--churn-steps", type=int_list, default=[25, 50], help="stochastic heun_sampler step counts")
    g.add_argument("--s-churn", type=float, default=80.0,
                   help="EDM's S_churn; gamma = min(s_churn / steps, sqrt(2) - 1): 80 is the cap for <= 193 steps")
    g.add_argument("--s-tmin", type=float, default=0.0)
    g.add_argument("--s-tmax", type=float, default=math.inf)
    g.add_argument("--s-noise", type=float, default=1.0)
    g.add_argument("--em-steps", type=int_list, default=[100, 500], help="Euler-Maruyama step counts")
    g.add_argument("--skip-ode", action="store_true", help="leave the adaptive RK45 sampler out of the quality table")
    g.add_argument("--dpm-steps", type=int_list, default=[10, 20],
                   help="DPM-Solver++(2M) step counts (= score evaluations)")
    g.add_argument("--fd-samples", type=int, default=1000)
    g.add_argument("--fd-batch", type=int, default=250)
    g = p.add_argument_group("training")
    g.add_argument("--train-steps", type=int, default=200)
    g.add_argument("--train-batch", type=int, default=32, help="batch size of both loops (tutorial: 32)")
    g.add_argument("--train-repeats", type=int, default=2)
    g.add_argument("--lr", type=float, default=1e-4)
    g = p.add_argument_group("notebooks")
    g.add_argument("--notebooks-dir", default=str(HERE.parent / "notebooks"))
    g.add_argument("--notebook-modes", type=lambda s: s.split(","), default=["quick", "default"])
    g.add_argument("--notebook-timeout", type=int, default=7200)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown sections {unknown}; choose from {SECTIONS}")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.data_dir = args.data_dir or default_data_root()
    device = torch.device(args.device)
    command = " ".join(["python benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])])
    # Sections accumulate in one file: a run of some sections replaces those and keeps the others,
    # each with the command and the machine state that produced it.
    results = json.loads(args.json.read_text(encoding="utf-8")) if args.json.is_file() else {}
    results.setdefault("sections", {})
    start = machine()
    print("# Benchmarks\n")
    print(table(["", ""], [[k, v] for k, v in start.items()]), flush=True)
    model = sde = source = None
    if {"likelihood", "sampling", "quality"} & set(sections):
        model, sde, source = load_model(args, device)
        print(f"\nscore model: {source}", flush=True)
    runners = {"likelihood": lambda: bench_likelihood(args, model, sde, device),
               "sampling": lambda: bench_sampling(args, model, sde, device),
               "quality": lambda: bench_quality(args, model, sde, device),
               "training": lambda: bench_training(args, sde or sgm.VESDE(args.sigma), device),
               "notebooks": lambda: bench_notebooks(args)}
    for name in sections:
        t0, section_start = time.perf_counter(), machine()
        out = runners[name]()
        out.update(command=command, wall_s=time.perf_counter() - t0, machine_start=section_start,
                   machine_end=machine())
        if name != "notebooks" and name != "training":
            out["model"] = source
        results["sections"][name] = out
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
