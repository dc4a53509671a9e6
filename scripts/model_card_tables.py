"""Print MODEL_CARD.md's evaluation tables from the JSON files `python -m sgm_helpers evaluate` wrote.

    python scripts/model_card_tables.py docs/evaluation_*.json

The evaluation can run as one command or be split into several (bits/dim in one process, each
sampler in another, to use more cores); this script merges what the files hold, so the numbers in
the card are copied from the files and not retyped. A sampler or bits/dim result found in more than
one file is an error: which run the card reports must be unambiguous.
"""

import argparse
import json
from pathlib import Path

NAMES = {"em": "Euler-Maruyama", "pc": "predictor-corrector", "ode": "probability-flow ODE (RK45)"}


def merge(paths):
    merged = {"bpd": None, "samplers": {}, "real": None, "sources": {}}
    for path in paths:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if "bpd" in data:
            if merged["bpd"] is not None:
                raise SystemExit(f"bits/dim found twice ({merged['sources']['bpd']} and {path})")
            merged["bpd"], merged["sources"]["bpd"] = data["bpd"], (path, data)
        for name, result in data.get("samplers", {}).items():
            if name in merged["samplers"]:
                raise SystemExit(f"sampler {name!r} found twice ({merged['sources'][name][0]} and {path})")
            merged["samplers"][name], merged["sources"][name] = result, (path, data)
        merged["real"] = merged["real"] or data.get("real_data_baseline")
    return merged


def histogram(h):
    return " ".join(str(v) for v in h)


def threads(data):
    n = data.get("torch_threads")
    return f"{n} CPU thread{'s' if n != 1 else ''}" if n else "CPU threads not recorded"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path)
    args = p.parse_args()
    m = merge(args.files)

    if m["bpd"]:
        b, (path, data) = m["bpd"], m["sources"]["bpd"]
        nfe = b["nfe_per_batch"]
        print(f"## Bits/dim ({path})\n")
        print(f"`{data['command']}`\n")
        print("| test images | bits/dim (mean ± standard error) | score evaluations per batch: mean, min-max "
              "| batch size | wall time |")
        print("|---|---|---|---|---|")
        print(f"| {b['n']:,} | {b['mean']:.3f} ± {b['stderr']:.3f} | {b['nfe_per_batch_mean']:.0f}, "
              f"{min(nfe)}-{max(nfe)} | {b['batch_size']} | {b['wall_s']:,.0f} s "
              f"({b['wall_s'] / b['n']:.2f} s per image, {threads(data)}) |\n")

    print("## Sample quality\n")
    print("| | n | Fréchet distance | unclipped | confident share (p >= 0.9) | class histogram (0-9) "
          "| score evaluations per batch | wall time |")
    print("|---|---|---|---|---|---|---|---|")
    if m["real"]:
        r = m["real"]
        print(f"| {r['n']:,} real training images (the floor at this n) | {r['n']:,} | {r['frechet_distance']:.2f} | "
              f"| {100 * r['confident_share']:.2f}% | {histogram(r['class_histogram'])} | - | - |")
    for name in ("em", "pc", "ode"):
        if name not in m["samplers"]:
            continue
        s, (path, data) = m["samplers"][name], m["sources"][name]
        nfe = s["score_evaluations_per_batch"]
        cost = str(nfe[0]) if len(set(nfe)) == 1 else f"{sum(nfe) / len(nfe):.0f} (mean of {', '.join(map(str, nfe))})"
        setting = f"{s['steps']} steps" if s["steps"] else "adaptive"
        if s.get("snr") is not None:
            setting += f", snr = {s['snr']:g}"
        print(f"| {NAMES[name]}, {setting} | {s['n']:,} | {s['frechet_distance']:.2f} | "
              f"{s['frechet_distance_unclipped']:.2f} | {100 * s['confident_share']:.2f}% | "
              f"{histogram(s['class_histogram'])} | {cost} (batch {s['batch_size']}) | "
              f"{s['wall_s']:,.0f} s ({threads(data)}) |")
    print()
    for name, (path, data) in sorted(m["sources"].items()):
        if name != "bpd":
            print(f"- {name}: `{data['command']}` -> {path}")


if __name__ == "__main__":
    main()
