"""scripts/model_card_tables.py: the model card's tables are printed from evaluate's JSON files."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "model_card_tables.py"
LIKELIHOOD_CARD = "# Model card: `mnist-likelihood`"


def _sampler(fd, nfe):
    return {"sampler": "x", "steps": 500, "snr": 0.16, "eps": 1e-3, "batch_size": 2,
            "score_evaluations_per_batch": nfe, "wall_s": 12.0, "n": 4, "frechet_distance": fd,
            "frechet_distance_unclipped": fd + 1, "confident_share": 0.5, "class_histogram": [1, 1, 2] + [0] * 7}


def _write(path, **extra):
    path.write_text(json.dumps({"command": f"python -m sgm_helpers evaluate # {path.name}", "torch_threads": 1,
                                "real_data_baseline": {"n": 4, "frechet_distance": 1.5, "confident_share": 1.0,
                                                       "class_histogram": [4] + [0] * 9}, **extra}))
    return path


def _run(*paths):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, paths)], capture_output=True, text=True, timeout=60)


def test_tables_merge_the_files(tmp_path):
    a = _write(tmp_path / "a.json", bpd={"n": 10, "mean": 4.25, "stderr": 0.0123, "batch_size": 5,
                                         "nfe_per_batch_mean": 150.0, "nfe_per_batch": [140, 160], "wall_s": 3.0})
    b = _write(tmp_path / "b.json", samplers={"pc": _sampler(61.234, [1000, 1000]), "ode": _sampler(99.0, [300, 310])})
    proc = _run(a, b)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "| 10 | 4.250 ± 0.012 | 150, 140-160 | 5 | 3 s (0.30 s per image, 1 CPU thread) |" in out
    assert "| predictor-corrector, 500 steps, snr = 0.16 | 4 | 61.23 | 62.23 | 50.00% | 1 1 2 0 0 0 0 0 0 0 |" in out
    assert "305 (mean of 300, 310)" in out
    assert out.index("predictor-corrector") < out.index("probability-flow ODE")   # em, pc, ode order


def _bpd(start, values, nfe):
    n = len(values)
    mean = sum(values) / n
    stderr = (sum((v - mean) ** 2 for v in values) / (n - 1) / n) ** 0.5
    return {"n": n, "start": start, "mean": mean, "stderr": stderr, "batch_size": 2, "hutchinson": "rademacher",
            "nfe_per_batch_mean": sum(nfe) / len(nfe), "nfe_per_batch": nfe, "wall_s": 10.0, "per_image": values}


def test_bits_per_dim_split_over_test_image_ranges_is_merged(tmp_path):
    first = _write(tmp_path / "bpd_0.json", weights_sha256="abc", bpd=_bpd(0, [1.0, 2.0, 3.0, 4.0], [100, 120]))
    second = _write(tmp_path / "bpd_4.json", weights_sha256="abc", bpd=_bpd(4, [5.0, 6.0], [140]))
    proc = _run(second, first)   # the order of the files does not matter
    assert proc.returncode == 0, proc.stderr
    # the mean and standard error over all six images, not the mean of the two parts' means (2.5 and 5.5)
    assert "| 6 | 3.500 ± 0.764 | 120, 100-140 | 2 | 20 s (3.33 s per image, 1 CPU thread, 2 processes) |" in proc.stdout
    assert "bpd_0.json # " not in proc.stdout and "# bpd_0.json`" in proc.stdout and "# bpd_4.json`" in proc.stdout
    alone = _run(second)
    assert "| 2 (indices 4-5) | 5.500 ± 0.500 |" in alone.stdout
    overlapping = _write(tmp_path / "bpd_3.json", weights_sha256="abc", bpd=_bpd(3, [5.0, 6.0], [140]))
    proc = _run(first, overlapping)
    assert proc.returncode != 0 and "without overlap or gap" in proc.stderr
    gap = _write(tmp_path / "bpd_5.json", weights_sha256="abc", bpd=_bpd(5, [5.0, 6.0], [140]))
    proc = _run(first, gap)   # images 4 missing: not the range the row would claim
    assert proc.returncode != 0 and "without overlap or gap" in proc.stderr
    other_weights = _write(tmp_path / "bpd_other.json", weights_sha256="def", bpd=_bpd(4, [5.0, 6.0], [140]))
    proc = _run(first, other_weights)
    assert proc.returncode != 0 and "differ in weights" in proc.stderr
    other_eps = _write(tmp_path / "bpd_eps.json", weights_sha256="abc",
                       bpd={**_bpd(4, [5.0, 6.0], [140]), "eps": 1e-3})
    proc = _run(first, other_eps)   # first has no eps: written before --bpd-eps, at 1e-5
    assert proc.returncode != 0 and "batch size or eps" in proc.stderr
    assert "The data placed at t = 0.001 (the default is 1e-05)." in _run(other_eps).stdout
    assert "The data placed at t" not in alone.stdout


def _point(name, label, steps, nfe, fd):
    return {"name": name, **_sampler(fd, [nfe]), "sampler": label, "steps": steps}


def test_the_curve_of_frechet_distance_against_score_evaluations_is_merged_and_drawn(tmp_path):
    a = _write(tmp_path / "a.json", curve=[_point("em", "Euler-Maruyama", 1000, 1000, 20.0),
                                           _point("em", "Euler-Maruyama", 100, 100, 60.0)])
    b = _write(tmp_path / "b.json", curve=[_point("heun", "Heun (EDM)", 18, 35, 30.0),
                                           _point("ode", "probability-flow ODE (RK45)", None, 140, 28.0)])
    proc = _run(b, a, "--plot", tmp_path / "curve.png")
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "steps |" not in line]
    assert rows[-4:] == ["| Euler-Maruyama | 100 | 100 | 60.00 | 50.00% | 4 | 12 s |",   # registry order, then steps
                         "| Euler-Maruyama | 1000 | 1000 | 20.00 | 50.00% | 4 | 12 s |",
                         "| probability-flow ODE (RK45) | adaptive | 140 | 28.00 | 50.00% | 4 | 12 s |",
                         "| Heun (EDM) | 18 | 35 | 30.00 | 50.00% | 4 | 12 s |"]
    assert (tmp_path / "curve.png").stat().st_size > 10_000
    again = _write(tmp_path / "c.json", curve=[_point("em", "Euler-Maruyama", 100, 100, 61.0)])
    proc = _run(a, again)
    assert proc.returncode != 0 and "curve point em at 100 steps found twice" in proc.stderr


def test_the_samplers_at_their_default_settings_join_the_curve(tmp_path):
    curve = _write(tmp_path / "curve.json", seed=0, curve=[_point("heun", "Heun (EDM)", 5, 9, 80.0)])
    defaults = _write(tmp_path / "heun.json", seed=0, samplers={"heun": {**_sampler(30.0, [35]), "sampler": "Heun (EDM)",
                                                                   "steps": 18}})
    proc = _run(defaults, curve)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.split("## Fréchet distance against score evaluations")[1].splitlines()
            if line.startswith("| Heun")]
    assert rows == ["| Heun (EDM) | 5 | 9 | 80.00 | 50.00% | 4 | 12 s |",
                    "| Heun (EDM) | 18 | 35 | 30.00 | 50.00% | 4 | 12 s |"]
    alone = _run(defaults)   # no curve in the files: no curve section
    assert alone.returncode == 0 and "against score evaluations" not in alone.stdout
    twice = _write(tmp_path / "twice.json", seed=0, curve=[_point("heun", "Heun (EDM)", 18, 35, 31.0)])
    proc = _run(defaults, twice)
    assert proc.returncode != 0 and "curve point heun at 18 steps found twice" in proc.stderr
    other_seed = _write(tmp_path / "seed1.json", seed=1, samplers={"em": _sampler(60.0, [500])})
    proc = _run(curve, other_seed)
    assert proc.returncode != 0 and "different (seed, number of samples)" in proc.stderr


def test_a_sampler_run_with_other_settings_is_a_line_of_its_own(tmp_path):
    churn = {"name": "heun-churn", "sampler": "Heun (EDM), churned", "options": {"s_churn": 80.0}}
    default = _write(tmp_path / "default.json", seed=0, curve=[{**_point("heun-churn", "", 25, 49, 40.0), **churn}])
    set40 = {**churn, "options": {"s_churn": 40}, "options_set": {"s_churn": 40}}
    chosen = _write(tmp_path / "s40.json", seed=0, curve=[{**_point("heun-churn", "", 25, 49, 35.0), **set40},
                                                          {**_point("heun-churn", "", 50, 99, 30.0), **set40}])
    proc = _run(default, chosen, "--plot", tmp_path / "curve.png")
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| Heun")]
    assert rows == ["| Heun (EDM), churned | 25 | 49 | 40.00 | 50.00% | 4 | 12 s |",
                    "| Heun (EDM), churned, s_churn = 40 | 25 | 49 | 35.00 | 50.00% | 4 | 12 s |",
                    "| Heun (EDM), churned, s_churn = 40 | 50 | 99 | 30.00 | 50.00% | 4 | 12 s |"]
    again = _write(tmp_path / "again.json", seed=0, curve=[{**_point("heun-churn", "", 50, 99, 31.0), **set40}])
    proc = _run(chosen, again)
    assert proc.returncode != 0 and "curve point heun-churn at 50 steps, s_churn = 40 found twice" in proc.stderr
    samplers = _write(tmp_path / "samplers.json", seed=0,
                      samplers={"em": {**_sampler(50.0, [501]), "options": {"denoise": True},
                                       "options_set": {"denoise": True}}})
    assert "| Euler-Maruyama, 500 steps, snr = 0.16, denoise = True | 4 | 50.00 |" in _run(samplers).stdout


def test_files_scored_against_other_images_are_not_merged(tmp_path):
    test = _write(tmp_path / "test.json", samplers={"em": _sampler(60.0, [500])})   # no field: the test split
    holdout = "the last 5000 training images (held out)"
    held = _write(tmp_path / "held.json", reference=holdout, samplers={"pc": _sampler(40.0, [1000])})
    proc = _run(test, held)
    assert proc.returncode != 0 and "scored against different images" in proc.stderr
    proc = _run(held)
    assert proc.returncode == 0 and f"**Scored against {holdout}, not the test split" in proc.stdout
    assert "not the test split" not in _run(test).stdout


def _run_record(path, sde, raw, ema, **extra):
    n = len(ema)
    summary = {w: {"mean": sum(v) / n, "stderr": 0.01} for w, v in (("raw", raw), ("ema", ema))}
    path.write_text(json.dumps({"command": f"python scripts/train_pretrained.py --sde {sde['name']}",
                                "sde": sde, "likelihood_weighting": True, "importance_sampling": True,
                                "dequantize": True, "architecture": {"class": "ScoreNet"}, "steps": 6880,
                                "epochs": 8.0, "steps_this_run": 6880, "wall_s_this_run": 2500.0,
                                "train_seconds_total": 2450.0, "steps_per_s": 2.75, "holdout": 5000,
                                "holdout_bpd": {"n": n, **summary},
                                "holdout_bpd_per_image": {"raw": raw, "ema": ema}, **extra}))
    return path


def test_the_runs_table_compares_held_out_bits_per_dim_image_by_image(tmp_path):
    vp = _run_record(tmp_path / "pilot_vp.json", {"name": "VPSDE", "beta_min": 0.1, "beta_max": 20.0},
                     [3.0, 4.0, 5.0], [2.0, 3.0, 4.0])
    sub = _run_record(tmp_path / "pilot_subvp.json", {"name": "subVPSDE", "beta_min": 0.1, "beta_max": 20.0},
                      [3.0, 4.0, 5.0], [1.9, 2.8, 4.0], steps=8000, steps_this_run=1120)
    proc = _run("--runs", vp, sub)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert ("| pilot_vp | VPSDE (beta_min = 0.1, beta_max = 20) | likelihood weighting + importance sampling + "
            "dequantized | ScoreNet | 6,880 (8.0) | 2,450 s at 2.75 steps/s | 4.000 ± 0.010 | 3.000 ± 0.010 "
            "| - |") in out
    # per image: -0.1, -0.2, 0.0 -> mean -0.1, standard error 0.1 / sqrt(3)
    assert "| 2,450 s in all at 2.75 steps/s (last run) | 4.000 ± 0.010 | 2.900 ± 0.010 | -0.100 ± 0.058 |" in out
    assert "- pilot_subvp: `SGM_DATA_DIR=../shared/data python scripts/train_pretrained.py --sde subVPSDE`" in out
    short = _run_record(tmp_path / "short.json", {"name": "VPSDE"}, [3.0, 4.0], [2.0, 3.0])
    proc = _run("--runs", vp, short)
    assert proc.returncode != 0 and "different numbers of held-out images" in proc.stderr


def test_a_result_in_two_files_is_an_error(tmp_path):
    a = _write(tmp_path / "a.json", samplers={"em": _sampler(60.0, [500])})
    b = _write(tmp_path / "b.json", samplers={"em": _sampler(61.0, [500])})
    proc = _run(a, b)
    assert proc.returncode != 0 and "sampler 'em' found twice" in proc.stderr


ROOT = SCRIPT.parents[1]
HISTORY = ROOT / "docs" / "history" / "mnist-ve25-5k"   # the first, 5,000-image weights


def _rows(paths):
    proc = _run(*paths)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    return [line for line, after in zip(lines, lines[1:] + [""])      # table rows, not headers or rulers
            if line.startswith("| ") and not after.startswith("|---")]


def test_the_model_card_shows_what_the_current_evaluation_files_hold_or_says_they_are_missing():
    card = (ROOT / "MODEL_CARD.md").read_text(encoding="utf-8")
    current = sorted((ROOT / "docs").glob("evaluation_*.json"))
    if not current:
        assert "not yet measured for these weights" in card
        return
    missing = [row for row in _rows(current) if row not in card]
    assert not missing, ("MODEL_CARD.md is out of date: run scripts/model_card_tables.py docs/evaluation_*.json\n"
                         f"{missing}")


def test_the_model_card_history_shows_what_its_files_hold():
    rows = _rows(sorted(HISTORY.glob("evaluation_*.json")))
    assert len(rows) == 5                       # bits/dim, the real-data floor, and three samplers
    card = (ROOT / "MODEL_CARD.md").read_text(encoding="utf-8")
    history = card[card.index("## History: the 5,000-image weights"):card.index("# Model card: `mnist-time-classifier`")]
    missing = [row for row in rows if row not in history]
    assert not missing, missing
    for image in ("samples_em.png", "samples_pc.png", "samples_ode.png"):
        assert f"docs/history/mnist-ve25-5k/{image}" in history and (HISTORY / image).is_file()


def test_the_readme_and_the_card_show_the_current_sample_grids_and_quote_only_measured_numbers():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for doc in (readme, (ROOT / "MODEL_CARD.md").read_text(encoding="utf-8")):
        for image in ("samples_em.png", "samples_pc.png", "samples_ode.png"):
            assert f"docs/{image}" in doc and (ROOT / "docs" / image).is_file()
    bpd_files = sorted((ROOT / "docs").glob("evaluation_*.json"))
    parts = [(path, data) for path in bpd_files for data in [json.loads(path.read_text())] if "bpd" in data]
    if parts:   # one run, or the test split in ranges run by several processes: merged as the card's script does
        spec = importlib.util.spec_from_file_location("model_card_tables", SCRIPT)
        tables = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tables)
        bpd = tables.merge_bpd(parts)
        assert f"{bpd['mean']:.3f} ± {bpd['stderr']:.3f} bits/dim" in readme
    else:   # the README must not quote the previous weights' test number as the shipped model's
        old = json.loads((HISTORY / "evaluation_bpd.json").read_text())["bpd"]
        assert f"{old['mean']:.3f} ± {old['stderr']:.3f}" not in readme


# --- controllable generation: the card's tables are what scripts/evaluate_controllable.py prints ------------------

CONTROLLABLE = ROOT / "docs" / "controllable"


def _printed(*args) -> list[str]:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate_controllable.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line.startswith("|")]


def test_the_model_cards_controllable_generation_tables_match_their_json(tmp_path):
    card = (ROOT / "MODEL_CARD.md").read_text(encoding="utf-8")
    printed = [*_printed("table", *sorted(CONTROLLABLE.glob("inpaint_*.json"))),
               *_printed("table", *sorted((CONTROLLABLE / "holdout").glob("inpaint_*.json"))),
               *_printed("table", *sorted(CONTROLLABLE.glob("super_resolution*.json")))]
    for method in ("classifier", "cfg"):
        lines = _printed("plot", *sorted(CONTROLLABLE.glob(f"guidance_{method}_*.json")), "--out",
                         tmp_path / f"{method}.png")
        printed += lines[:lines.index("| | 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 |")]   # the summary table
    assert len(printed) > 20
    missing = [line for line in printed if line not in card]
    assert not missing, f"MODEL_CARD.md lacks rows that the JSON in docs/controllable gives: {missing}"


# --- the likelihood model's pilot runs: the card's table is what model_card_tables.py --runs prints ----------------


def test_the_model_cards_likelihood_runs_table_matches_the_run_records():
    runs = sorted((ROOT / "docs" / "likelihood").glob("pilot_*.json"), key=lambda p: (p.name != "pilot_vp.json", p.name))
    assert len(runs) >= 2
    card = (ROOT / "MODEL_CARD.md").read_text(encoding="utf-8")
    missing = [row for row in _rows(["--runs", *runs]) if row not in card]
    assert not missing, f"MODEL_CARD.md lacks rows that docs/likelihood/pilot_*.json give: {missing}"


# --- mnist-unet: the held-out comparison that chose it is what its files hold ---------------------------------------


def test_the_model_cards_unet_comparison_matches_its_held_out_files():
    files = sorted((ROOT / "docs" / "unet").glob("holdout_*.json"))
    assert {f.name for f in files} >= {"holdout_unet_ema.json", "holdout_unet_raw.json", "holdout_mnist_ve25.json"}
    card = (ROOT / "MODEL_CARD.md").read_text(encoding="utf-8")
    section = card[card.index("# Model card: `mnist-unet`"):card.index(LIKELIHOOD_CARD)]
    for path in files:   # each file on its own: two networks' results for one sampler must not be merged
        rows = _rows([path])
        assert any("Heun (EDM), churned" in row for row in rows)
        missing = [row for row in rows if row not in section]
        assert not missing, f"MODEL_CARD.md's mnist-unet section lacks rows of {path.name}: {missing}"


def test_paired_compares_bits_per_dim_image_by_image_on_the_images_both_files_scored(tmp_path):
    a = {"bpd": {"start": 0, "n": 4, "per_image": [3.0, 2.0, 4.0, 1.0]}}
    b = {"bpd": {"start": 1, "n": 4, "per_image": [2.5, 4.0, 1.5, 9.9]}}   # images 1-4; in common: 1, 2, 3
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    proc = _run("--paired", tmp_path / "a.json", tmp_path / "b.json")
    assert proc.returncode == 0, proc.stderr
    # differences 0.5, 0.0, 0.5: mean 1/3, standard error sqrt(1/12 / 3) = 0.1667; the largest is image 1's
    assert "on the 3 images 1-3 both scored" in proc.stdout
    assert "| 3 | 2.333 | 2.667 | +0.3333 ± 0.1667 | +0.500 (1) |" in proc.stdout
    (tmp_path / "c.json").write_text(json.dumps({"bpd": {"start": 10, "n": 2, "per_image": [1.0, 2.0]}}))
    proc = _run("--paired", tmp_path / "a.json", tmp_path / "c.json")
    assert proc.returncode != 0 and "share fewer than two images" in proc.stderr


def test_the_model_cards_unet_section_shows_each_dpm_solver_schedule_file():
    # The schedule study: held-out files (for the choice) and test-split files (for the report), each shown on its own.
    files = sorted((ROOT / "docs" / "dpm_schedule").glob("*.json"))
    assert any(f.name.startswith("holdout_") for f in files) and any(f.name.startswith("test_") for f in files)
    card = (ROOT / "MODEL_CARD.md").read_text(encoding="utf-8")
    section = card[card.index("# Model card: `mnist-unet`"):card.index(LIKELIHOOD_CARD)]
    for path in files:
        data = json.loads(path.read_text())
        assert ("--holdout" in data["command"]) == path.name.startswith("holdout_"), path.name
        rows = _rows([path])
        assert any("schedule = " in row for row in rows), path.name
        missing = [row for row in rows if row not in section]
        assert not missing, f"MODEL_CARD.md's mnist-unet section lacks rows of {path.name}: {missing}"


def test_the_model_cards_unet_test_split_tables_match_its_evaluation_files():
    files = sorted((ROOT / "docs" / "unet").glob("evaluation_*.json"))
    card = (ROOT / "MODEL_CARD.md").read_text(encoding="utf-8")
    section = card[card.index("# Model card: `mnist-unet`"):card.index(LIKELIHOOD_CARD)]
    if not files:
        assert "reports no test-split number for `mnist-unet`" in section
        return
    for path in files:   # scored against the test split, with the bundled weights, not a checkpoint
        data = json.loads(path.read_text())
        assert "--model mnist-unet" in data["command"] and "--holdout" not in data["command"], path.name
    rows = _rows(files)
    assert any("Euler-Maruyama" in row for row in rows)
    missing = [row for row in rows if row not in section]
    assert not missing, ("MODEL_CARD.md's mnist-unet section is out of date: run scripts/model_card_tables.py "
                         f"docs/unet/evaluation_*.json\n{missing}")


def test_the_model_cards_likelihood_section_shows_each_held_out_bits_per_dim_file():
    files = [p for p in sorted((ROOT / "docs" / "likelihood").glob("*.json")) if "bpd" in json.loads(p.read_text())]
    assert len(files) >= 4
    card = (ROOT / "MODEL_CARD.md").read_text(encoding="utf-8")
    section = card[card.index(LIKELIHOOD_CARD):]
    for path in files:   # each file on its own: different weights are not merged
        rows = [row for row in _rows([path]) if "±" in row]
        assert len(rows) == 1 and rows[0] in section, f"the likelihood section lacks {path.name}'s bits/dim: {rows}"
        assert path.name in section


def test_the_mnist_likelihood_card_shows_its_sample_quality_files():
    files = sorted(p for p in (ROOT / "docs" / "mnist_likelihood").glob("evaluation_*.json")
                   if not p.name.startswith("evaluation_bpd_"))
    card = (ROOT / "MODEL_CARD.md").read_text(encoding="utf-8")
    section = card[card.index(LIKELIHOOD_CARD):card.index("## How it was chosen")]
    if not files:
        assert "Its samples are not measured" in section
        return
    for path in files:   # the bundled weights against the test split
        data = json.loads(path.read_text())
        assert "--model mnist-likelihood" in data["command"] and "--holdout" not in data["command"], path.name
    missing = [row for row in _rows(files) if row not in section]
    assert not missing, ("MODEL_CARD.md's mnist-likelihood section is out of date: run scripts/model_card_tables.py "
                         f"on the card's docs/mnist_likelihood/evaluation_<sampler>.json files\n{missing}")


# mnist-likelihood's earlier weights: their folder under docs/history, their section's heading, their 10,000-image
# bits/dim and how many sample grids they have
LIKELIHOOD_HISTORY = [
    ("mnist-likelihood-scorenet", "## History: the first weights", "| 10,000 | 2.812 ± 0.006 |", 4),
    ("mnist-likelihood-unet-2ep", "## History: the two-epoch weights", "| 10,000 | 1.662 ± 0.003 |", 6),
]


@pytest.mark.parametrize("folder, heading, bpd_row, n_images", LIKELIHOOD_HISTORY, ids=[h[0] for h in LIKELIHOOD_HISTORY])
def test_the_mnist_likelihood_history_shows_what_the_earlier_weights_files_hold(folder, heading, bpd_row, n_images):
    history_dir = ROOT / "docs" / "history" / folder
    files = sorted(history_dir.glob("evaluation_*.json"))
    assert len(files) >= 5                      # four bits/dim ranges and the samplers
    card = (ROOT / "MODEL_CARD.md").read_text(encoding="utf-8")
    start = card.index(heading, card.index(LIKELIHOOD_CARD))
    history = card[start:card.index("\n## ", start)]
    bpd_files = [p for p in files if p.name.startswith("evaluation_bpd_")]
    rows = [row for row in _rows(bpd_files) if "±" in row] + _rows([p for p in files if p not in bpd_files])
    missing = [row for row in rows if row not in history]
    assert not missing, missing
    assert bpd_row in history
    images = sorted((history_dir / "evaluation").glob("samples_*.png"))
    assert len(images) == n_images
    for image in images:
        assert f"docs/history/{folder}/evaluation/{image.name}" in history
    from sgm_helpers.pretrained import model_info

    for path in files:                          # measured with the weights the section names, not the shipped ones
        sha = json.loads(path.read_text())["weights_sha256"]
        assert sha in history and sha != model_info("mnist-likelihood")["sha256"], path.name


# model, its files, where its section starts and ends, and the notebooks that quote its test bits/dim besides the README
TEST_BPD = [("mnist-likelihood", "mnist_likelihood", LIKELIHOOD_CARD, "## How it was chosen", ["05_likelihood.ipynb"]),
            ("mnist-unet", "unet", "# Model card: `mnist-unet`", LIKELIHOOD_CARD, ["05_likelihood.ipynb"])]


@pytest.mark.parametrize("model, folder, begin, end, notebooks", TEST_BPD, ids=[m[0] for m in TEST_BPD])
def test_the_card_shows_each_models_test_split_bits_per_dim_on_all_10000_images(model, folder, begin, end, notebooks):
    files = sorted((ROOT / "docs" / folder).glob("evaluation_bpd_*.json"))
    assert files, f"docs/{folder} has no evaluation_bpd_*.json"
    parts = [json.loads(p.read_text()) for p in files]
    card = (ROOT / "MODEL_CARD.md").read_text(encoding="utf-8")
    section = card[card.index(begin):card.index(end, card.index(begin))]
    for path, data in zip(files, parts):   # the bundled weights against the test split, at the default eps
        assert f"--model {model}" in data["command"] and "--holdout" not in data["command"], path.name
        assert data["bpd"].get("eps") == 1e-5, path.name
    covered = sorted(i for d in parts for i in range(d["bpd"]["start"], d["bpd"]["start"] + d["bpd"]["n"]))
    assert covered == list(range(10000))
    rows = [row for row in _rows(files) if "±" in row]
    assert len(rows) == 1 and rows[0].startswith("| 10,000 |") and rows[0] in section, rows
    spec = importlib.util.spec_from_file_location("model_card_tables", SCRIPT)
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    bpd = tables.merge_bpd(list(zip(files, parts)))
    quoted = f"{bpd['mean']:.3f} ± {bpd['stderr']:.3f} bits/dim"   # the README and notebooks quote the card
    assert quoted in section
    assert quoted in (ROOT / "README.md").read_text(encoding="utf-8")
    for notebook in notebooks:
        assert quoted in (ROOT / "notebooks" / notebook).read_text(encoding="utf-8")


# the files of the bundled weights' numbers on the test split (mnist-ve25's at the top of docs/, the others' by name);
# the held-out files beside them record choices between checkpoints and stay as they were
CURRENT = ["docs/evaluation_*.json", "docs/unet/evaluation_*.json", "docs/mnist_likelihood/evaluation_*.json",
           "docs/dpm_schedule/test_*.json"]


@pytest.mark.parametrize("pattern", CURRENT)
def test_the_current_evaluation_files_were_measured_with_the_shipped_weights(pattern):
    """A re-shipped model leaves no number of its old weights among the current ones (those go to docs/history)."""
    from sgm_helpers.pretrained import DEFAULT_MODEL, model_info

    files = sorted(ROOT.glob(pattern))
    assert files, f"nothing matches {pattern}"
    for path in files:
        data = json.loads(path.read_text())
        words = data["command"].split()
        name = words[words.index("--model") + 1] if "--model" in words else DEFAULT_MODEL
        assert "--checkpoint" not in words, f"{path.name}: a checkpoint's numbers are not the shipped model's"
        assert data["weights_sha256"] == model_info(name)["sha256"], (
            f"{path.relative_to(ROOT)} was measured with other weights than the shipped {name!r}: "
            f"move it to docs/history and measure the shipped weights again")
