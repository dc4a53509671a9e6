"""What the score networks cost to train on this machine: ScoreNet against UNet, and ``torch.compile``.

    python benchmarks/networks.py                        # both sections, one thread, batch 64
    python benchmarks/networks.py --only step --rounds 12 --unet 16,32,64:1 --unet 32,64,128:1

Sections (``--only``, comma-separated):

- ``step``: one training step (``dsm_loss`` forward and backward, then Adam) at batch 64 of the tutorial's
  ``ScoreNet`` and of ``UNet`` at its defaults (plus any ``--unet CHANNELS:BLOCKS`` configurations). The
  models take turns within each round, so that they share the machine's load; the reported ratio is the
  median over rounds of each round's time ratio to ScoreNet (robust when the load drifts), next to the
  ratio of the best times. Also parameters, float32 megabytes and GFLOP per image (``FlopCounterMode``).
- ``compile``: ScoreNet's training step eager and with ``torch.compile(model)`` (what ``train`` would
  wrap): the seconds the first compiled steps take (compilation), then alternating timed rounds; the
  speed-up, and how many steps a run needs before compiling pays for itself. The compiled step's loss is
  checked against the eager one on the same weights and noise.

The images are uniform noise of MNIST's shape (a step's cost does not depend on the pixels), the SDE is
``VESDE(25)`` (the SDE changes nothing in a network's cost). The numbers go into ``--json`` (default
``benchmarks/results.json``, sections ``networks`` and ``compile``, next to ``run.py``'s), each with its
command and the machine's load at start and end: on a shared machine compare the ratios, not the times.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import machine, table  # noqa: E402  (benchmarks/run.py)

import sgm_helpers as sgm  # noqa: E402
from sgm_helpers.models import UNet  # noqa: E402

SECTIONS = ("step", "compile")


class Stepper:
    """One model with its Adam optimizer; ``step()`` is a training step on a fixed batch with seeded noise."""

    def __init__(self, model: torch.nn.Module, images: torch.Tensor, sde, lr: float = 2e-4):
        self.model, self.images, self.sde = model, images, sde
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.generator = torch.Generator().manual_seed(0)

    def step(self) -> float:
        loss = sgm.dsm_loss(self.model, self.images, self.sde, generator=self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def seconds_per_step(self, steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        return (time.perf_counter() - t0) / steps


def gflop_per_image(model: torch.nn.Module, sde) -> float:
    """GFLOP of one forward + backward pass per 28x28 image, counted by ``FlopCounterMode`` (batch of 4)."""
    x = torch.rand(4, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        sgm.dsm_loss(copy.deepcopy(model), x, sde).backward()
    return counter.get_total_flops() / 4 / 1e9


def alternate(steppers: dict, rounds: int, steps: int) -> dict:
    """``rounds`` rounds; in each, every stepper runs ``steps`` timed steps in turn: name -> s/step, per round."""
    seconds = {name: [] for name in steppers}
    for _ in range(rounds):
        for name, stepper in steppers.items():
            seconds[name].append(stepper.seconds_per_step(steps))
    return seconds


def parse_unet(spec: str) -> dict:
    """``"16,32,96:1"`` -> UNet keyword arguments (channels, num_res_blocks)."""
    channels, _, blocks = spec.partition(":")
    return {"channels": tuple(int(c) for c in channels.split(",")), "num_res_blocks": int(blocks or 1)}


def bench_step(args, sde) -> dict:
    print(f"\n## A training step at batch {args.batch}: ScoreNet against UNet ({args.rounds} alternating rounds of "
          f"{args.steps} steps, after {args.warmup} warm-up steps each)", flush=True)
    images = torch.rand(args.batch, 1, 28, 28, generator=torch.Generator().manual_seed(args.seed))
    torch.manual_seed(args.seed)
    models = {"ScoreNet (the tutorial's)": sgm.ScoreNet(sde.marginal_prob_std),
              "UNet (defaults)": UNet(sde.marginal_prob_std)}
    for spec in args.unet:
        models[f"UNet {spec}"] = UNet(sde.marginal_prob_std, **parse_unet(spec))
    steppers = {name: Stepper(model, images, sde) for name, model in models.items()}
    for stepper in steppers.values():
        for _ in range(args.warmup):
            stepper.step()
    seconds = alternate(steppers, args.rounds, args.steps)
    base = next(iter(models))
    out, rows = {}, []
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        ratios = [a / b for a, b in zip(seconds[name], seconds[base])]
        out[name] = {"architecture": model.architecture, "parameters": params, "float32_mb": params * 4 / 1e6,
                     "gflop_per_image": gflop_per_image(model, sde), "seconds_per_step": seconds[name],
                     "median_s": statistics.median(seconds[name]), "best_s": min(seconds[name]),
                     "ratio_median_of_rounds": statistics.median(ratios),
                     "ratio_of_best": min(seconds[name]) / min(seconds[base])}
        o = out[name]
        rows.append([name, f"{params:,}", f"{o['float32_mb']:.2f}", f"{o['gflop_per_image']:.3f}",
                     f"{o['median_s']:.3f}", f"{o['best_s']:.3f}", f"{o['ratio_median_of_rounds']:.2f}x",
                     f"{o['ratio_of_best']:.2f}x"])
    print(table(["network", "parameters", "MB (float32)", "GFLOP / image (fwd + bwd)", "s / step (median)",
                 "s / step (best)", "time ratio (median of rounds)", "ratio of best times"], rows), flush=True)
    return {"batch_size": args.batch, "rounds": args.rounds, "steps_per_round": args.steps,
            "warmup_steps": args.warmup, "results": out}


def bench_compile(args, sde) -> dict:
    print(f"\n## torch.compile of ScoreNet's training step at batch {args.batch} ({args.rounds} alternating rounds "
          f"of {args.steps} steps)", flush=True)
    images = torch.rand(args.batch, 1, 28, 28, generator=torch.Generator().manual_seed(args.seed))
    torch.manual_seed(args.seed)
    init = sgm.ScoreNet(sde.marginal_prob_std)
    eager = Stepper(copy.deepcopy(init), images, sde)
    compiled = Stepper(torch.compile(copy.deepcopy(init)), images, sde)
    # Same weights, same noise: the first losses must agree (up to the fused kernels' rounding).
    first_eager = eager.step()
    t0 = time.perf_counter()
    first_compiled = compiled.step()
    first_step_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(max(args.warmup - 1, 0)):
        compiled.step()
        eager.step()
    warmup_s = time.perf_counter() - t0
    seconds = alternate({"eager": eager, "compiled": compiled}, args.rounds, args.steps)
    e, c = statistics.median(seconds["eager"]), statistics.median(seconds["compiled"])
    speedup = statistics.median(a / b for a, b in zip(seconds["eager"], seconds["compiled"]))
    compile_s = first_step_s - e   # the first compiled step, less what a step costs anyway
    break_even = compile_s / (e - c) if e > c else None
    out = {"batch_size": args.batch, "rounds": args.rounds, "steps_per_round": args.steps,
           "first_loss_eager": first_eager, "first_loss_compiled": first_compiled,
           "first_loss_rel_diff": abs(first_compiled - first_eager) / abs(first_eager),
           "first_compiled_step_s": first_step_s, "compile_s": compile_s, "warmup_s_both": warmup_s,
           "seconds_per_step": seconds, "eager_median_s": e, "compiled_median_s": c,
           "speedup_median_of_rounds": speedup, "break_even_steps": break_even}
    rows = [["eager", f"{e:.3f}", f"{1 / e:.2f}", "1.00x", ""],
            ["torch.compile(model)", f"{c:.3f}", f"{1 / c:.2f}", f"{speedup:.2f}x",
             f"{first_step_s:.0f} s (first step)"]]
    print(table(["ScoreNet training step", "s / step (median)", "steps / s", "speed-up (median of rounds)",
                 "compilation"], rows))
    print(f"(first loss eager {first_eager:.4f}, compiled {first_compiled:.4f}, relative difference "
          f"{out['first_loss_rel_diff']:.1e}; "
          + (f"compiling pays off after {break_even:,.0f} steps)" if break_even is not None
             else "compiling never pays off: the compiled step is not faster)"), flush=True)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections (default: all of {SECTIONS})")
    p.add_argument("--json", type=Path, default=HERE / "results.json", help="where the numbers go")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1: one training core)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=8, help="alternating timed rounds")
    p.add_argument("--steps", type=int, default=3, help="timed steps per model per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    p.add_argument("--unet", action="append", default=[], metavar="CHANNELS:BLOCKS",
                   help="another UNet to time, e.g. 32,64,128:1 (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown sections {unknown}; choose from {SECTIONS}")
    torch.set_num_threads(args.threads)
    sde = sgm.VESDE(25.0)
    command = " ".join(["python benchmarks/networks.py", *(argv if argv is not None else sys.argv[1:])])
    print("# Score networks: training cost\n")
    print(table(["", ""], [[k, v] for k, v in machine().items()]), flush=True)
    runners = {"step": lambda: bench_step(args, sde), "compile": lambda: bench_compile(args, sde)}
    names = {"step": "networks", "compile": "compile"}
    for name in sections:
        t0, start = time.perf_counter(), machine()
        out = runners[name]()
        out.update(command=command, wall_s=time.perf_counter() - t0, machine_start=start, machine_end=machine())
        # Read just before writing: run.py's sections in the same file are kept.
        results = json.loads(args.json.read_text(encoding="utf-8")) if args.json.is_file() else {}
        results.setdefault("sections", {})[names[name]] = out
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
