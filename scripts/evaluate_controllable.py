r"""The model card's numbers for controllable generation (notebook 7): guidance, inpainting, super-resolution.

    SGM_DATA_DIR=../shared/data python scripts/evaluate_controllable.py guidance --method classifier \
        --scales 0 1 2 4 8 --json docs/controllable/guidance_classifier.json
    SGM_DATA_DIR=../shared/data python scripts/evaluate_controllable.py guidance --method cfg \
        --scales 0 1 2 4 --json docs/controllable/guidance_cfg.json
    SGM_DATA_DIR=../shared/data python scripts/evaluate_controllable.py inpaint --regions bottom right \
        --json docs/controllable/inpaint.json
    SGM_DATA_DIR=../shared/data python scripts/evaluate_controllable.py super-resolution --factors 2 4 \
        --json docs/controllable/super_resolution.json

``guidance``: --per-class samples of every digit at every --scale (classifier guidance with the bundled
``mnist-ve25`` and ``mnist-time-classifier``, or classifier-free guidance with ``mnist-conditional``), graded by
the evaluation classifier: the share classified as the requested digit, the share it is confident about, and
per class the Fréchet distance to the test digits of that class, next to the floor that as many held-out
training digits reach. With --plot, the trade-off against the scale as a figure.

``inpaint``: the first --n test digits with a region hidden, completed by ``inpaint`` (its defaults: Euler-Maruyama
with reconstruction guidance at scale 2, each step done twice by RePaint's resampling; --reconstruction-guidance 0
is the paper's plain replacement, --resamplings 1 drops the resampling, --corrector adds a Langevin step before
each step); the share the evaluation classifier assigns to the original digit's class, against the
nearest-neighbour baseline (the unknown pixels of the training digit nearest on the known ones, among the first
55,000). Settings are chosen with --split holdout (the last 5,000 training digits, which the bundled score
model never saw; the evaluation classifier did) and reported once on the test digits.

``super-resolution``: the first --n test digits averaged over f x f blocks and upsampled by ``super_resolve``;
the share classified as the original's class and the mean squared error to the original, against upsampling by
repeating each block's mean and against the nearest training digit at low resolution.

``plot``: merges the guidance JSON files of one method (scales split over several processes, one per core) into
one trade-off figure and prints the model card's table; a scale found in two files is an error.

    python scripts/evaluate_controllable.py plot docs/controllable/guidance_cfg_*.json \
        --out docs/controllable/guidance_cfg.png

``table``: the model card's tables from inpaint and super-resolution JSON files (inpainting runs over different --n are
also compared on the test digits they share).

All samplers run at their defaults unless --steps says otherwise; every draw is seeded by --seed. Every result
goes to --json (JSON) and is printed.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import sys
import time
from pathlib import Path

import torch

from sgm_helpers import load_classifier, load_mnist
from sgm_helpers.classifier import predict_proba
from sgm_helpers.controllable import (DEFAULT_SCALES, block_means, cfg_score, classifier_guided_score, inpaint,
                                      region_mask, super_resolve)
from sgm_helpers.evaluation import class_conditional_quality, draw_samples, nearest_neighbour_fill
from sgm_helpers.pretrained import load_pretrained, model_info, pretrained_sde

TRAIN_IMAGES = 55_000  # the bundled models trained on the first 55,000; the last 5,000 are held out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="task", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--steps", type=int, default=None, help="sampler steps (default: the sampler's, 500)")
    common.add_argument("--batch-size", type=int, default=250)
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--device", default=None, help="default: CUDA if available, else the CPU")
    common.add_argument("--threads", type=int, default=None)
    common.add_argument("--json", type=Path, required=True, help="where the results go")
    g = sub.add_parser("guidance", parents=[common], help="class-conditional samples at several scales")
    g.add_argument("--method", choices=["classifier", "cfg"], required=True)
    g.add_argument("--scales", type=float, nargs="+", default=None,
                   help="default: the method's DEFAULT_SCALES entry (the command line's default scale)")
    g.add_argument("--per-class", type=int, default=100)
    g.add_argument("--sampler", choices=["em", "pc"], default="em")
    g.add_argument("--plot", type=Path, default=None, help="also save the trade-off figure here (PNG)")
    i = sub.add_parser("inpaint", parents=[common], help="complete test digits with a region hidden")
    i.add_argument("--regions", nargs="+", choices=["bottom", "top", "left", "right", "square"], default=["bottom"])
    i.add_argument("--n", type=int, default=1000)
    i.add_argument("--resamplings", type=int, default=None,
                   help="RePaint's resamplings per step (default: inpaint's default)")
    i.add_argument("--reconstruction-guidance", type=float, default=None, metavar="SCALE",
                   help="inpaint's guidance (default: inpaint's default; 0: replacement alone)")
    i.add_argument("--corrector", action=argparse.BooleanOptionalAction, default=None,
                   help="a Langevin corrector step before each predictor step (default: inpaint's default)")
    s = sub.add_parser("super-resolution", parents=[common], help="upsample block means of test digits")
    s.add_argument("--factors", type=int, nargs="+", default=[2, 4])
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--reconstruction-guidance", type=float, default=None, metavar="SCALE",
                   help="super_resolve's guidance (default: super_resolve's default; 0: replacement alone)")
    s.add_argument("--corrector", action=argparse.BooleanOptionalAction, default=None,
                   help="a Langevin corrector step before each predictor step (default: super_resolve's default)")
    for sub_parser in (i, s):
        sub_parser.add_argument("--split", choices=["test", "holdout"], default="test",
                       help="the first --n test digits (the reported numbers), or the first --n of the 5,000 "
                            "held-out training digits (for choosing settings; default: test)")
    m = sub.add_parser("plot", help="merge guidance JSON files into one figure and table")
    m.add_argument("inputs", type=Path, nargs="+", help="JSON files written by `guidance` with the same --method")
    m.add_argument("--out", type=Path, required=True, help="the figure (PNG)")
    t = sub.add_parser("table", help="print the model card's tables from inpaint and super-resolution JSON files")
    t.add_argument("inputs", type=Path, nargs="+", help="JSON files written by `inpaint` or `super-resolution`")
    return p.parse_args(argv)


def guided_models(method: str, device) -> tuple[dict, object, list[str]]:
    """The bundled networks for ``method``, loaded once: ``(networks, sde, their names)``."""
    names = ["mnist-ve25", "mnist-time-classifier"] if method == "classifier" else ["mnist-conditional"]
    return {name: load_pretrained(name, device=device) for name in names}, pretrained_sde(names[0]), names


def guided_score(method: str, networks: dict, scale: float, labels: torch.Tensor, device):
    """The score function that samples ``labels`` with classifier or classifier-free guidance at ``scale``."""
    if method == "classifier":
        return classifier_guided_score(networks["mnist-ve25"], networks["mnist-time-classifier"], labels.to(device),
                                       scale)
    return cfg_score(networks["mnist-conditional"], labels.to(device), scale)


def run_guidance(args, device, data, judge) -> dict:
    test_images, test_labels, train_images, train_labels = data
    held_out, held_out_labels = train_images[TRAIN_IMAGES:], train_labels[TRAIN_IMAGES:]
    labels = torch.arange(10).repeat_interleave(args.per_class)
    networks, sde, models = guided_models(args.method, device)
    results = {"method": args.method, "models": models, "sampler": args.sampler, "per_class": args.per_class,
               "steps": args.steps or 500, "scales": {}}
    for scale in args.scales or [DEFAULT_SCALES[args.method]]:
        samples, nfe = [], []
        t0 = time.perf_counter()
        for start in range(0, len(labels), args.batch_size):
            batch = labels[start:start + args.batch_size]
            score = guided_score(args.method, networks, scale, batch, device)
            x, calls, _ = draw_samples(args.sampler, score, sde, len(batch), steps=args.steps, batch_size=len(batch),
                                       generator=torch.Generator().manual_seed(args.seed + start), device=device,
                                       progress=False)
            samples.append(x)
            nfe += calls
        quality = class_conditional_quality(torch.cat(samples), labels, judge, test_images, test_labels,
                                            real_images=held_out, real_labels=held_out_labels)
        results["scales"][f"{scale:g}"] = {"scale": scale, "score_evaluations_per_batch": nfe,
                                           "wall_s": time.perf_counter() - t0, **quality}
        print(f"scale {scale:g}: accuracy {quality['accuracy']:.1%}, confident {quality['confident_share']:.1%}, "
              f"mean per-class Fréchet distance {quality['mean_class_frechet_distance']:.1f} (floor "
              f"{quality['mean_class_frechet_floor']:.1f}), {time.perf_counter() - t0:.0f} s", flush=True)
    if args.plot:
        plot_tradeoff(results, args.plot)
    return results


def plot_tradeoff(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(results["scales"].values())
    scales = [r["scale"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(scales, [100 * r["accuracy"] for r in rows], "o-", color="C0", label="classified as requested (%)")
    ax.plot(scales, [100 * r["confident_share"] for r in rows], "^--", color="C0", label="confident (%)")
    ax.set(xlabel="guidance scale", ylabel="share of samples (%)",
           title=f"{'Classifier' if results['method'] == 'classifier' else 'Classifier-free'} guidance: "
                 f"{results['per_class']} samples per digit")
    right = ax.twinx()
    right.plot(scales, [r["mean_class_frechet_distance"] for r in rows], "s-", color="C3",
               label="per-class Fréchet distance")
    right.axhline(rows[0]["mean_class_frechet_floor"], color="C3", ls=":", label="real digits' floor")
    right.set_ylabel("mean per-class Fréchet distance", color="C3")
    lines = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="center right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


SAME_SETTINGS = ("method", "models", "sampler", "per_class", "steps", "evaluation_classifier_sha256", "model_sha256")


def merge_guidance(paths: list[Path]) -> dict:
    """One results dict from several ``guidance`` JSON files run with the same settings (scales sorted)."""
    merged, sources = None, {}
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("task") != "guidance":
            raise SystemExit(f"{path}: not a guidance result (task {data.get('task')!r})")
        if merged is None:
            merged = {**{k: data.get(k) for k in SAME_SETTINGS}, "scales": {}, "commands": []}
        differing = [k for k in SAME_SETTINGS if data.get(k) != merged[k]]
        if differing:
            raise SystemExit(f"{path} differs from {paths[0]} in {', '.join(differing)}: not one sweep")
        for key, entry in data["scales"].items():
            if key in sources:
                raise SystemExit(f"scale {key} found twice ({sources[key]} and {path})")
            merged["scales"][key], sources[key] = entry, path
        merged["commands"].append(data["command"])
    merged["scales"] = dict(sorted(merged["scales"].items(), key=lambda item: item[1]["scale"]))
    return merged


def guidance_table(results: dict) -> str:
    """The model card's table: one row per scale."""
    rows = ["| scale | classified as requested | confident (p >= 0.9) | per-class Fréchet distance (floor) | "
            "guided-score calls per sample | wall time |", "|---|---|---|---|---|---|"]
    for r in results["scales"].values():
        n = results["per_class"] * 10
        rows.append(f"| {r['scale']:g} | {r['accuracy']:.1%} | {r['confident_share']:.1%} | "
                    f"{r['mean_class_frechet_distance']:.1f} ({r['mean_class_frechet_floor']:.1f}) | "
                    f"{r['score_evaluations_per_batch'][0]} | {r['wall_s']:,.0f} s for {n:,} |")
    return "\n".join(rows)


def per_class_table(entry: dict) -> str:
    """One scale's numbers per requested digit: accuracy, confident share, Fréchet distance and its floor."""
    classes = entry["per_class"]
    rows = ["| | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
    for name, key, fmt in (("classified as requested", "accuracy", "{:.0%}"),
                           ("confident (p >= 0.9)", "confident_share", "{:.0%}"),
                           ("Fréchet distance", "frechet_distance", "{:.1f}"),
                           ("floor (held-out digits)", "frechet_floor", "{:.1f}")):
        rows.append(f"| {name} | " + " | ".join(fmt.format(c[key]) for c in classes.values()) + " |")
    return "\n".join(rows)


def run_plot(args) -> None:
    results = merge_guidance(args.inputs)
    plot_tradeoff(results, args.out)
    print(guidance_table(results))
    for key, entry in results["scales"].items():
        print(f"\nscale {key}, per requested digit:\n{per_class_table(entry)}")


def _region_name(region: str) -> str:
    return "the centre square" if region == "square" else f"{region} half"


def inpaint_table(runs: list[dict]) -> str:
    """One row per run and region. Runs over different --n are also compared on the first n digits all share."""
    splits = {run.get("split", "test") for run in runs}
    if len(splits) > 1:
        raise SystemExit("these inpainting runs used different --split values: tabulate the held-out and the test "
                         "runs separately")
    shared = min(run["n"] for run in runs)
    rows = [f"| region | reconstruction guidance | resamplings U | corrector | steps | n | classified as the original "
            f"| on the first {shared:,} | nearest neighbour | known pixels kept exactly | wall time |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        guidance = run.get("guidance", 0.0)  # runs from before the option existed used the replacement alone
        for region, r in run["regions"].items():
            first = sum(r["inpaint_correct"][:shared]) / shared
            rows.append(f"| {_region_name(region)} | {guidance:g} | {run['resamplings']} | "
                        f"{'yes' if run['corrector'] else 'no'} | "
                        f"{run['steps']} | {run['n']:,} | {r['inpaint_accuracy']:.1%} | {first:.1%} | "
                        f"{r['nearest_neighbour_accuracy']:.1%} | {r['known_pixels_kept_exactly']} | "
                        f"{r['wall_s']:,.0f} s |")
    return "\n".join(rows)


def super_resolution_table(runs: list[dict]) -> str:
    rows = ["| factor | input | n | reconstruction guidance | corrector | super_resolve: classified as the original, MSE "
            "| block repeat | nearest training digit | largest block-mean change | wall time |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        # runs from before these settings were recorded used the then-default: predictor-corrector, no guidance
        guidance, corrector = run.get("guidance", 0.0), run.get("corrector", True)
        for f, r in run["factors"].items():
            cells = [f"{r[k]['accuracy']:.1%}, {r[k]['mse']:.4f}" for k in ("super_resolve", "block_repeat",
                                                                              "nearest_neighbour")]
            rows.append(f"| {f} | {28 // int(f)}x{28 // int(f)} | {run['n']:,} | {guidance:g} | "
                        f"{'yes' if corrector else 'no'} | {' | '.join(cells)} | {r['block_means_max_error']:.1e} | "
                        f"{r['wall_s']:,.0f} s |")
    return "\n".join(rows)


def run_table(args) -> None:
    runs = [json.loads(path.read_text(encoding="utf-8")) for path in args.inputs]
    for run in runs:
        if run.get("task") not in ("inpaint", "super-resolution"):
            raise SystemExit(f"{run.get('command')}: not an inpaint or super-resolution result (use `plot` for guidance)")
    inpainting = [run for run in runs if run.get("task") == "inpaint"]
    if inpainting:
        print(inpaint_table(inpainting))
    super_resolution = [run for run in runs if run.get("task") == "super-resolution"]
    if super_resolution:
        print(super_resolution_table(super_resolution))


def _accuracy(judge, images, labels) -> float:
    return float((predict_proba(judge, images.clamp(0, 1)).argmax(1) == labels).double().mean())


def _digits(args, data) -> tuple[torch.Tensor, torch.Tensor]:
    """The first --n digits of --split: the test split, or the held-out end of the training split."""
    test_images, test_labels, train_images, train_labels = data
    if args.split == "holdout":
        return train_images[TRAIN_IMAGES:][:args.n], train_labels[TRAIN_IMAGES:][:args.n]
    return test_images[:args.n], test_labels[:args.n]


def _imputation_settings(args, fn) -> dict:
    """The --steps, --resamplings, --reconstruction-guidance and --corrector given, else ``fn``'s defaults (recorded
    in the JSON)."""
    defaults = {name: p.default for name, p in inspect.signature(fn).parameters.items()}
    given = {"num_steps": args.steps, "resamplings": getattr(args, "resamplings", None),
             "guidance": args.reconstruction_guidance, "corrector": args.corrector}
    return {name: defaults[name] if value is None else value for name, value in given.items()}


def run_inpaint(args, device, data, judge) -> dict:
    images, labels = _digits(args, data)
    pool = data[2][:TRAIN_IMAGES]
    settings = _imputation_settings(args, inpaint)
    model, sde = load_pretrained("mnist-ve25", device=device), pretrained_sde("mnist-ve25")
    results = {"models": ["mnist-ve25"], "split": args.split, "n": args.n, "steps": settings["num_steps"],
               "resamplings": settings["resamplings"], "guidance": settings["guidance"],
               "corrector": settings["corrector"],
               "regions": {}}
    for region in args.regions:
        mask = region_mask(region)
        t0 = time.perf_counter()
        completed = torch.cat([
            inpaint(model, sde, images[i:i + args.batch_size], mask, **settings,
                    device=device, progress=False,
                    generator=torch.Generator().manual_seed(args.seed + i)).cpu()
            for i in range(0, len(images), args.batch_size)])
        kept = bool(torch.equal(completed[:, mask.expand_as(images[0])], images[:, mask.expand_as(images[0])]))
        entry = {"inpaint_accuracy": _accuracy(judge, completed, labels),
                 "nearest_neighbour_accuracy": _accuracy(judge, nearest_neighbour_fill(images, mask, pool), labels),
                 "masked_accuracy": _accuracy(judge, torch.where(mask, images, torch.zeros_like(images)), labels),
                 "known_pixels_kept_exactly": kept, "wall_s": time.perf_counter() - t0,
                 "largest_abs_pixel": float(completed.abs().max()),
                 # per test digit, in order: so runs over different --n compare on the digits they share
                 "inpaint_correct": (predict_proba(judge, completed.clamp(0, 1)).argmax(1) == labels).int().tolist()}
        results["regions"][region] = entry
        print(f"{_region_name(region)} hidden: inpainting {entry['inpaint_accuracy']:.1%} classified as the original "
              f"digit, nearest neighbour {entry['nearest_neighbour_accuracy']:.1%}, the masked digit itself "
              f"{entry['masked_accuracy']:.1%}; known pixels kept exactly: {kept}", flush=True)
    return results


def run_super_resolution(args, device, data, judge) -> dict:
    images, labels = _digits(args, data)
    pool = data[2][:TRAIN_IMAGES]
    model, sde = load_pretrained("mnist-ve25", device=device), pretrained_sde("mnist-ve25")
    settings = _imputation_settings(args, super_resolve)
    results = {"models": ["mnist-ve25"], "split": args.split, "n": args.n, "steps": settings["num_steps"],
               "resamplings": settings["resamplings"], "guidance": settings["guidance"],
               "corrector": settings["corrector"], "factors": {}}
    for f in args.factors:
        low = block_means(images, f)
        t0 = time.perf_counter()
        up = torch.cat([super_resolve(model, sde, low[i:i + args.batch_size], f, **settings, device=device,
                                      progress=False,
                                      generator=torch.Generator().manual_seed(args.seed + i)).cpu()
                        for i in range(0, len(low), args.batch_size)])
        repeated = low.repeat_interleave(f, -1).repeat_interleave(f, -2)
        nearest = pool[torch.cdist(low.flatten(1), block_means(pool, f).flatten(1)).argmin(1)]
        entry = {}
        for name, x in [("super_resolve", up.clamp(0, 1)), ("block_repeat", repeated), ("nearest_neighbour", nearest)]:
            entry[name] = {"accuracy": _accuracy(judge, x, labels), "mse": float((x - images).pow(2).mean())}
        entry["block_means_max_error"] = float((block_means(up, f) - low).abs().max())
        entry["wall_s"] = time.perf_counter() - t0
        results["factors"][str(f)] = entry
        print(f"x{f}: " + "; ".join(f"{k} accuracy {v['accuracy']:.1%}, MSE {v['mse']:.4f}"
                                    for k, v in entry.items() if isinstance(v, dict)), flush=True)
    return results


def main(argv=None):
    args = parse_args(argv)
    if args.task in ("plot", "table"):
        return (run_plot if args.task == "plot" else run_table)(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    test_images, test_labels = load_mnist(train=False)
    train_images, train_labels = load_mnist(train=True)
    judge = load_classifier(device=device)
    run = {"guidance": run_guidance, "inpaint": run_inpaint, "super-resolution": run_super_resolution}[args.task]
    results = {"command": "python scripts/evaluate_controllable.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "task": args.task, "seed": args.seed, "device": str(device), "torch": torch.__version__,
               "python": platform.python_version(), "evaluation_classifier_sha256": model_info("mnist-classifier")["sha256"],
               "torch_threads": torch.get_num_threads(),
               **run(args, device, (test_images, test_labels, train_images, train_labels), judge)}
    results["model_sha256"] = {name: model_info(name)["sha256"] for name in results["models"]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
