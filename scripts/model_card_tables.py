"""Print MODEL_CARD.md's evaluation tables from the JSON files `python -m sgm_helpers evaluate` wrote.

    python scripts/model_card_tables.py docs/evaluation_*.json [--plot docs/fd_against_nfe.png]
    python scripts/model_card_tables.py --runs docs/likelihood/pilot_*.json
    python scripts/model_card_tables.py --paired docs/mnist_likelihood/evaluation_bpd_0.json CHECK.json

The evaluation can run as one command or be split into several (bits/dim in one process, each
sampler in another, to use more cores); this script merges what the files hold, so the numbers in
the card are copied from the files and not retyped. A sampler result found in more than one file is
an error: which run the card reports must be unambiguous. Bits/dim may be split over processes by
test-image range (``evaluate --bpd-start S --bpd-n N``): disjoint ranges of the same weights, with the
same probes and batch size, are merged into one mean and standard error over all their images;
ranges that overlap or leave a gap are an error. Points of the curve of Fréchet distance against score evaluations
(``evaluate --curve``) are merged likewise (the same sampler, step count and settings twice is an error) and,
with --plot, drawn; a sampler run with other settings (``evaluate --option heun-churn:s_churn=40``) is a line
of its own, labelled with them. The samplers' results at their default settings are points of the same curve (the same
function draws and scores them, from the same seed), so once any file holds a curve, they join it; points drawn
with different seeds or numbers of samples are an error.

--paired A B compares the bits/dim of two evaluation files image by image on the images both scored (the same
dequantization and probes when both used the same seed, start and batch size): the mean of the differences B - A with
its standard error, and the largest. For a change of code or settings on the same weights.

--runs prints a table of training runs from the records ``scripts/train_pretrained.py --info-json`` wrote: the
settings that differ, steps and time, held-out bits/dim of the raw and EMA weights, and each run's EMA bits/dim
against the first run's on the same held-out images (the mean of the per-image differences, with its standard
error: a paired comparison, much tighter than the two means' own errors).
"""

import argparse
import json
import math
from pathlib import Path

from sgm_helpers.likelihood import DEFAULT_EPS as DEFAULT_BPD_EPS  # files written before --bpd-eps existed used it

NAMES = {"em": "Euler-Maruyama", "pc": "predictor-corrector", "ancestral": "ancestral (DDPM for VP)",
         "ode": "probability-flow ODE (RK45)", "heun": "Heun (EDM)", "heun-churn": "Heun (EDM), churned",
         "dpm2m": "DPM-Solver++(2M)"}


def settings(result: dict) -> tuple:
    """The settings an evaluation set on a sampler over the registry's (``evaluate --option``), as a sorted tuple."""
    return tuple(sorted(result.get("options_set", {}).items()))


def settings_text(result: dict) -> str:
    """``", s_churn = 40"`` for a result with ``options_set = {"s_churn": 40}``; ``""`` for the registry's settings."""
    return _words(settings(result))


def _words(pairs) -> str:
    return "".join(f", {k} = {v}" for k, v in pairs)


def point_text(key: tuple) -> str:
    """``("heun-churn", 50, (("s_churn", 40),))`` -> ``"heun-churn at 50 steps, s_churn = 40"``."""
    name, steps, chosen = key
    return f"{name} at {steps or 'adaptive'} steps" + _words(chosen)


TEST_SPLIT = "the test split"   # what evaluate scores against without --holdout (files from before it say nothing)



def merge_bpd(parts):
    """One bits/dim result from ``[(path, data), ...]`` whose ``bpd`` entries cover disjoint test-image ranges."""
    if len(parts) == 1:
        return parts[0][1]["bpd"]
    parts = sorted(parts, key=lambda part: part[1]["bpd"].get("start", 0))
    keys = {(data.get("weights_sha256"), data.get("model"), data["bpd"]["hutchinson"], data["bpd"]["batch_size"],
             data["bpd"].get("eps", DEFAULT_BPD_EPS)) for _, data in parts}
    if len(keys) > 1:
        raise SystemExit("bits/dim parts differ in weights, probes, batch size or eps: "
                         + ", ".join(str(path) for path, _ in parts))
    values, end = [], None
    for path, data in parts:
        b = data["bpd"]
        if "per_image" not in b:
            raise SystemExit(f"bits/dim found twice, and {path} has no per-image values to merge")
        if end is not None and b.get("start", 0) != end:
            raise SystemExit(f"bits/dim ranges must follow each other without overlap or gap: {path} starts at "
                             f"image {b.get('start', 0)}, the range before it ends at {end}")
        end = b.get("start", 0) + b["n"]
        values += b["per_image"]
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    nfe = [k for _, data in parts for k in data["bpd"]["nfe_per_batch"]]
    first = parts[0][1]["bpd"]
    return {"n": n, "start": first.get("start", 0), "parts": len(parts), "mean": mean, "stderr": std / math.sqrt(n),
            "batch_size": first["batch_size"], "hutchinson": first["hutchinson"],
            "eps": first.get("eps", DEFAULT_BPD_EPS), "nfe_per_batch": nfe,
            "nfe_per_batch_mean": sum(nfe) / len(nfe), "wall_s": sum(data["bpd"]["wall_s"] for _, data in parts)}


def merge(paths):
    merged = {"bpd": None, "samplers": {}, "real": None, "sources": {}, "curve": {}, "reference": {}}
    bpd_parts, seed_of = [], {}
    for path in paths:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        seed_of[path] = data.get("seed")
        merged["reference"].setdefault(data.get("reference", TEST_SPLIT), []).append(str(path))
        if "bpd" in data:
            bpd_parts.append((path, data))
        for name, result in data.get("samplers", {}).items():
            if name in merged["samplers"]:
                raise SystemExit(f"sampler {name!r} found twice ({merged['sources'][name][0]} and {path})")
            merged["samplers"][name], merged["sources"][name] = result, (path, data)
        for point in data.get("curve", []):
            key = (point["name"], point["steps"], settings(point))
            if key in merged["curve"]:
                raise SystemExit(f"curve point {point_text(key)} found twice ({merged['curve'][key][1]} and {path})")
            merged["curve"][key] = (point, path)
        merged["real"] = merged["real"] or data.get("real_data_baseline")
    if len(merged["reference"]) > 1:
        raise SystemExit("the files were scored against different images: " + "; ".join(
            f"{', '.join(paths)} against {reference}" for reference, paths in merged["reference"].items()))
    if merged["curve"]:
        for name, result in merged["samplers"].items():
            key, path = (name, result["steps"], settings(result)), merged["sources"][name][0]
            if key in merged["curve"]:
                raise SystemExit(f"curve point {point_text(key)} found twice ({merged['curve'][key][1]} and {path})")
            merged["curve"][key] = ({"name": name, **result}, path)
        seeds = {(seed_of[path], point["n"]) for point, path in merged["curve"].values()}
        if len(seeds) > 1:
            raise SystemExit(f"the curve's points were drawn with different (seed, number of samples): {sorted(seeds)}")
    if bpd_parts:
        merged["bpd"], merged["sources"]["bpd"] = merge_bpd(bpd_parts), bpd_parts[0]
        merged["bpd_commands"] = [(path, data["command"]) for path, data in bpd_parts]
    return merged


def histogram(h):
    return " ".join(str(v) for v in h)


def threads(data):
    n = data.get("torch_threads")
    return f"{n} CPU thread{'s' if n != 1 else ''}" if n else "CPU threads not recorded"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", type=Path)
    p.add_argument("--runs", nargs="+", type=Path, default=None, help="training-run records (--info-json files)")
    p.add_argument("--plot", type=Path, default=None, help="draw the curve of Fréchet distance against score "
                                                           "evaluations here (PNG)")
    p.add_argument("--paired", nargs=2, type=Path, default=None, metavar=("A", "B"),
                   help="bits/dim of two evaluation files compared image by image (B - A)")
    args = p.parse_args()
    if args.paired:
        paired_table(*args.paired)
    if args.runs:
        runs_table(args.runs)
    if not args.files:
        return
    m = merge(args.files)
    reference = next(iter(m["reference"]))
    if reference != TEST_SPLIT:
        print(f"**Scored against {reference}, not the test split: for choices, not for reporting.**\n")

    if m["bpd"]:
        b, (path, data) = m["bpd"], m["sources"]["bpd"]
        nfe = b["nfe_per_batch"]
        sources = m["bpd_commands"]
        print(f"## Bits/dim ({', '.join(str(p) for p, _ in sources)})\n")
        for _, command in sources:
            print(f"`{command}`\n")
        start = b.get("start", 0)
        images = f"{b['n']:,}" if start == 0 else f"{b['n']:,} (indices {start:,}-{start + b['n'] - 1:,})"
        split = f", {b['parts']} processes" if "parts" in b else ""
        if b.get("eps", DEFAULT_BPD_EPS) != DEFAULT_BPD_EPS:
            print(f"The data placed at t = {b['eps']:g} (the default is {DEFAULT_BPD_EPS:g}).\n")
        print("| test images | bits/dim (mean ± standard error) | score evaluations per batch: mean, min-max "
              "| batch size | wall time |")
        print("|---|---|---|---|---|")
        print(f"| {images} | {b['mean']:.3f} ± {b['stderr']:.3f} | {b['nfe_per_batch_mean']:.0f}, "
              f"{min(nfe)}-{max(nfe)} | {b['batch_size']} | {b['wall_s']:,.0f} s "
              f"({b['wall_s'] / b['n']:.2f} s per image, {threads(data)}{split}) |\n")

    print("## Sample quality\n")
    print("| | n | Fréchet distance | unclipped | confident share (p >= 0.9) | class histogram (0-9) "
          "| score evaluations per batch | wall time |")
    print("|---|---|---|---|---|---|---|---|")
    if m["real"]:
        r = m["real"]
        print(f"| {r['n']:,} real training images (the floor at this n) | {r['n']:,} | {r['frechet_distance']:.2f} | "
              f"| {100 * r['confident_share']:.2f}% | {histogram(r['class_histogram'])} | - | - |")
    for name in [*NAMES, *sorted(set(m["samplers"]) - set(NAMES))]:   # the registry's order, then any other
        if name not in m["samplers"]:
            continue
        s, (path, data) = m["samplers"][name], m["sources"][name]
        nfe = s["score_evaluations_per_batch"]
        cost = str(nfe[0]) if len(set(nfe)) == 1 else f"{sum(nfe) / len(nfe):.0f} (mean of {', '.join(map(str, nfe))})"
        setting = f"{s['steps']} steps" if s["steps"] else "adaptive"
        if s.get("snr") is not None:
            setting += f", snr = {s['snr']:g}"
        setting += settings_text(s)
        print(f"| {NAMES.get(name, s['sampler'])}, {setting} | {s['n']:,} | {s['frechet_distance']:.2f} | "
              f"{s['frechet_distance_unclipped']:.2f} | {100 * s['confident_share']:.2f}% | "
              f"{histogram(s['class_histogram'])} | {cost} (batch {s['batch_size']}) | "
              f"{s['wall_s']:,.0f} s ({threads(data)}) |")
    print()
    for name, (path, data) in sorted(m["sources"].items()):
        if name != "bpd":
            print(f"- {name}: `{data['command']}` -> {path}")
    if m["curve"]:
        points = curve_points(m["curve"])
        print("\n## Fréchet distance against score evaluations\n")
        print("| sampler | steps | score evaluations | Fréchet distance | confident share (p >= 0.9) | n "
              "| wall time |")
        print("|---|---|---|---|---|---|---|")
        for point, nfe in points:
            print(f"| {point['sampler']}{settings_text(point)} | {point['steps'] or 'adaptive'} | {nfe:.0f} | "
                  f"{point['frechet_distance']:.2f} | {100 * point['confident_share']:.2f}% | {point['n']:,} | "
                  f"{point['wall_s']:,.0f} s |")
        print()
        samplers_files = {str(path) for path, _ in m["sources"].values()}
        for path in sorted({str(path) for _, path in m["curve"].values()} - samplers_files):   # the others: above
            print(f"- curve: `{json.loads(Path(path).read_text(encoding='utf-8'))['command']}` -> {path}")
        if args.plot:
            plot_curve(points, m["real"], args.plot)
            print(f"\nwrote {args.plot}")


def _paired(a: list, b: list) -> tuple[float, float]:
    """Mean and standard error of the per-image differences a - b."""
    if len(a) != len(b):
        raise SystemExit(f"runs were evaluated on different numbers of held-out images ({len(a)} and {len(b)})")
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in d) / (len(d) - 1) / len(d))


def paired_table(path_a: Path, path_b: Path) -> None:
    """Print the image-by-image comparison of two files' bits/dim (``--paired``)."""
    a, b = (json.loads(p.read_text(encoding="utf-8")).get("bpd") for p in (path_a, path_b))
    if not a or not b or "per_image" not in a or "per_image" not in b:
        raise SystemExit("--paired needs two evaluation files with per-image bits/dim")
    index_a = {a.get("start", 0) + i: v for i, v in enumerate(a["per_image"])}
    index_b = {b.get("start", 0) + i: v for i, v in enumerate(b["per_image"])}
    common = sorted(set(index_a) & set(index_b))
    if len(common) < 2:
        raise SystemExit(f"{path_a} and {path_b} share fewer than two images")
    mean, stderr = _paired([index_b[i] for i in common], [index_a[i] for i in common])
    worst = max(common, key=lambda i: abs(index_b[i] - index_a[i]))
    print(f"{path_b} - {path_a}, on the {len(common):,} images {common[0]:,}-{common[-1]:,} both scored:\n")
    print("| images | mean of A | mean of B | mean difference B - A (± standard error) | largest difference (image) |")
    print("|---|---|---|---|---|")
    print(f"| {len(common):,} | {sum(index_a[i] for i in common) / len(common):.3f} | "
          f"{sum(index_b[i] for i in common) / len(common):.3f} | {mean:+.4f} ± {stderr:.4f} | "
          f"{index_b[worst] - index_a[worst]:+.3f} ({worst:,}) |\n")


def _training_time(run: dict) -> str:
    """All of a run's training time when the checkpoint recorded it (resumed runs), else this run's."""
    total = run.get("train_seconds_total")
    rate = f" at {run['steps_per_s']:.2f} steps/s" if run.get("steps_per_s") else ""
    if total is not None and run.get("steps_this_run") != run["steps"]:
        return f"{total:,.0f} s in all{rate} (last run)"
    return f"{total if total is not None else run['wall_s_this_run']:,.0f} s{rate}"


def network(architecture: dict) -> str:
    """The class, and what its time embedding sees when that is not t (``time_input``)."""
    time_input = architecture.get("time_input", "t")
    return architecture["class"] + ("" if time_input == "t" else f", {time_input.replace('_', ' ')}(t) input")


def runs_table(paths) -> None:
    runs = [(Path(path), json.loads(Path(path).read_text(encoding="utf-8"))) for path in paths]
    first_path, first = runs[0]
    print(f"| run | SDE | weighting | network | steps (epochs) | training time | held-out bits/dim, raw | EMA "
          f"| EMA minus {first_path.stem}'s, per image |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path, run in runs:
        sde = ", ".join(f"{k} = {v:g}" for k, v in run["sde"].items() if k != "name")
        uniform = f"uniform t for {run.get('uniform_share', 0):.0%}"
        weighting = " + ".join(name for flag, name in (("likelihood_weighting", "likelihood weighting"),
                                                       ("importance_sampling", "importance sampling"),
                                                       ("uniform_share", uniform),
                                                       ("dequantize", "dequantized")) if run.get(flag)) or "none"
        held = run["holdout_bpd"]
        cells = [f"{held[w]['mean']:.3f} ± {held[w]['stderr']:.3f}" for w in ("raw", "ema")]
        if path == first_path:
            paired = "-"
        else:
            mean, se = _paired(run["holdout_bpd_per_image"]["ema"], first["holdout_bpd_per_image"]["ema"])
            paired = f"{mean:+.3f} ± {se:.3f}"
        print(f"| {path.stem} | {run['sde']['name']} ({sde}) | {weighting} | {network(run['architecture'])} | "
              f"{run['steps']:,} ({run['epochs']:.1f}) | {_training_time(run)} | {cells[0]} | {cells[1]} | {paired} |")
    print(f"\nHeld-out images: the first {first['holdout_bpd']['n']:,} of the last {first['holdout']:,} training "
          "images.\n")
    for path, run in runs:
        print(f"- {path.stem}: `SGM_DATA_DIR=../shared/data {run['command']}`")
    print()


def curve_points(curve: dict) -> list:
    """``[(point, mean score evaluations per batch), ...]`` in the registry's sampler order, then by step count."""
    order = {name: i for i, name in enumerate(NAMES)}
    points = [point for point, _ in curve.values()]
    points.sort(key=lambda p: (order.get(p["name"], len(order)), p["name"], settings(p), p["steps"] or 0))
    return [(p, sum(p["score_evaluations_per_batch"]) / len(p["score_evaluations_per_batch"])) for p in points]


def plot_curve(points, real, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for series in dict.fromkeys((p["name"], settings(p)) for p, _ in points):   # one line per sampler setting
        mine = [(nfe, p["frechet_distance"]) for p, nfe in points if (p["name"], settings(p)) == series]
        first = next(p for p, _ in points if (p["name"], settings(p)) == series)
        ax.plot(*zip(*mine), "o-" if len(mine) > 1 else "s", label=first["sampler"] + settings_text(first))
    if real:
        ax.axhline(real["frechet_distance"], color="k", ls="--", lw=1,
                   label=f"{real['n']:,} real training digits (the floor)")
    n = points[0][0]["n"]
    ax.set(xscale="log", yscale="log", xlabel="score evaluations per sample",
           ylabel="Fréchet distance (classifier features)",
           title=f"Sample quality against cost ({n:,} samples per point)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
