"""evaluate_model (the model card's pipeline) and draw_samples on small inputs, and the CLI's evaluate calling it."""

import json

import pytest
import torch

from sgm_helpers import load_classifier, load_pretrained, pretrained_sde
from sgm_helpers.__main__ import main
from sgm_helpers.evaluation import draw_samples, evaluate_model


@pytest.fixture(scope="module")
def model_and_sde():
    return load_pretrained(device="cpu"), pretrained_sde()


def _images(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), generator=g).float() / 255, torch.arange(n) % 10


def test_draw_samples_batches_counts_and_is_seeded(model_and_sde):
    model, sde = model_and_sde
    x, nfe, wall = draw_samples("heun", model, sde, 5, steps=2, batch_size=2, device="cpu", progress=False,
                                generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 1, 28, 28) and nfe == [3, 3, 3] and wall > 0
    again, _, _ = draw_samples("heun", model, sde, 5, steps=2, batch_size=2, device="cpu", progress=False,
                               generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, again, rtol=0, atol=0)
    with pytest.raises(ValueError, match="sampler must be one of"):
        draw_samples("rk4", model, sde, 2, progress=False)


def test_evaluate_model_returns_every_part_and_saves_grids(model_and_sde, tmp_path):
    model, sde = model_and_sde
    test_images, test_labels = _images(6, 1)
    train_images, _ = _images(8, 2)
    updates = []
    results = evaluate_model(model, sde, test_images=test_images, test_labels=test_labels, train_images=train_images,
                             classifier=load_classifier(device="cpu"), samplers=("em", "dpm2m"), n_samples=6,
                             batch_size=3, steps=3, bpd_n=2, bpd_batch_size=2, device="cpu", progress=False,
                             grid_dir=tmp_path, on_update=lambda r: updates.append(sorted(r)), log=lambda line: None)
    assert results["sde"] == {"name": "VESDE", "sigma": 25.0}
    assert 0 <= results["classifier"]["test_accuracy"] <= 1
    assert results["bpd"]["n"] == 2 and results["bpd"]["mean"] > 0 and results["bpd"]["start"] == 0
    assert len(results["bpd"]["per_image"]) == 2
    assert abs(sum(results["bpd"]["per_image"]) / 2 - results["bpd"]["mean"]) < 1e-5
    for name in ("em", "dpm2m"):
        entry = results["samplers"][name]
        assert entry["steps"] == 3 and entry["score_evaluations_per_batch"] == [3, 3]
        assert (tmp_path / f"samples_{name}.png").is_file()
    assert len(updates) == 4  # baseline, bits/dim, then one per sampler
    json.dumps(results)  # JSON-ready
    # a later range of test images, as a second process would run it: its own seed, recorded start
    later = evaluate_model(model, sde, test_images=test_images, test_labels=test_labels, train_images=train_images,
                           classifier=load_classifier(device="cpu"), samplers=(), n_samples=6, bpd_n=2, bpd_start=4,
                           bpd_batch_size=2, device="cpu", progress=False, log=lambda line: None)
    assert later["bpd"]["start"] == 4 and len(later["bpd"]["per_image"]) == 2
    assert results["bpd"]["eps"] == 1e-5
    # the data placed at another t: evaluate_bpd's eps, with the same seed as evaluate_model's own draw
    from sgm_helpers.likelihood import evaluate_bpd

    coarse = evaluate_model(model, sde, test_images=test_images, test_labels=test_labels, train_images=train_images,
                            classifier=load_classifier(device="cpu"), samplers=(), n_samples=6, bpd_n=2,
                            bpd_batch_size=2, bpd_eps=1e-3, device="cpu", progress=False, log=lambda line: None)
    direct = evaluate_bpd(model, sde, test_images[:2], batch_size=2, eps=1e-3, progress=False, device="cpu",
                          generator=torch.Generator().manual_seed(0))
    assert coarse["bpd"]["eps"] == 1e-3
    assert coarse["bpd"]["per_image"] == [round(v, 6) for v in direct.bpd.double().tolist()]
    assert coarse["bpd"]["per_image"] != results["bpd"]["per_image"]
    with pytest.raises(ValueError, match=r"bpd_eps must be a number in the open interval \(0, 1\), got 0"):
        evaluate_model(model, sde, test_images=test_images, test_labels=test_labels, train_images=train_images,
                       classifier=None, samplers=(), bpd_n=2, bpd_eps=0)
    with pytest.raises(ValueError, match="bpd_start = 5 and bpd_n = 2 must select images of test_images"):
        evaluate_model(model, sde, test_images=test_images, test_labels=test_labels, train_images=train_images,
                       classifier=None, samplers=(), bpd_n=2, bpd_start=5)
    with pytest.raises(ValueError, match="samplers must be names"):
        evaluate_model(model, sde, test_images=test_images, test_labels=test_labels, train_images=train_images,
                       classifier=None, samplers=("rk4",), bpd_n=0)


def test_evaluate_model_draws_the_curve_of_frechet_distance_against_score_evaluations(model_and_sde):
    model, sde = model_and_sde
    test_images, test_labels = _images(6, 1)
    train_images, _ = _images(8, 2)
    common = dict(test_images=test_images, test_labels=test_labels, train_images=train_images,
                  classifier=load_classifier(device="cpu"), samplers=(), n_samples=4, batch_size=4, bpd_n=0,
                  device="cpu", progress=False, log=lambda line: None)
    results = evaluate_model(model, sde, curve={"heun": [2, 3], "dpm2m": [2]}, **common)
    points = [(p["name"], p["steps"], p["score_evaluations_per_batch"]) for p in results["curve"]]
    assert points == [("heun", 2, [3]), ("heun", 3, [5]), ("dpm2m", 2, [2])]   # Heun: 2N - 1 evaluations
    assert all(p["n"] == 4 and p["frechet_distance"] > 0 for p in results["curve"])
    json.dumps(results)
    for curve, match in (({"ode": [3]}, r"curve\['ode'\] must be \[None\] \(the sampler is adaptive\)"),
                         ({"heun": [None]}, r"curve\['heun'\] must be a list of step counts >= 1"),
                         ({"heun": [0]}, "step counts >= 1"), ({"heun": []}, "step counts >= 1"),
                         ({"rk4": [3]}, "samplers must be names")):
        with pytest.raises(ValueError, match=match):
            evaluate_model(model, sde, curve=curve, **common)


def test_evaluate_model_replaces_a_samplers_settings_where_asked(model_and_sde):
    model, sde = model_and_sde
    test_images, test_labels = _images(6, 1)
    train_images, _ = _images(8, 2)
    common = dict(test_images=test_images, test_labels=test_labels, train_images=train_images,
                  classifier=load_classifier(device="cpu"), samplers=("heun-churn",), n_samples=4, batch_size=4,
                  bpd_n=0, steps=3, device="cpu", progress=False, log=lambda line: None)
    churned = evaluate_model(model, sde, curve={"heun": [3]}, **common)
    # no churn: the registry's churned Heun becomes the deterministic one, the same samples from the same seed
    unchurned = evaluate_model(model, sde, curve={"heun-churn": [3]}, options={"heun-churn": {"s_churn": 0.0}},
                               **common)
    deterministic = churned["curve"][0]
    for entry in (unchurned["samplers"]["heun-churn"], unchurned["curve"][0]):
        assert entry["frechet_distance"] == deterministic["frechet_distance"]
        assert entry["options"] == {"s_churn": 0.0} and entry["options_set"] == {"s_churn": 0.0}
    default = churned["samplers"]["heun-churn"]
    assert default["options"] == {"s_churn": 80.0} and "options_set" not in default
    assert default["frechet_distance"] != deterministic["frechet_distance"]
    with pytest.raises(ValueError, match=r"options\['heun'\] may set \['rho', 's_churn', 's_noise', 's_tmax', "
                                         r"'s_tmin'\], got \['snr'\]"):
        evaluate_model(model, sde, options={"heun": {"snr": 0.2}}, **common)
    with pytest.raises(ValueError, match="samplers must be names"):
        evaluate_model(model, sde, options={"rk4": {}}, **common)


@pytest.mark.parametrize("argv, match", [(["--option", "rk4:x=1"], "'rk4' is not a sampler"),
                                         (["--option", "heun:s_churn"], "give heun:NAME=VALUE with NAME one of rho"),
                                         (["--option", "em:num_steps=3"], "give em:NAME=VALUE with NAME one of "
                                                                          "denoise")])
def test_cli_evaluate_refuses_bad_sampler_options(argv, match, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", *argv])
    assert match in capsys.readouterr().err


def test_cli_sampler_options_are_parsed_as_numbers_flags_or_words():
    from sgm_helpers.__main__ import _sampler_option

    assert _sampler_option("heun-churn:s_churn=40") == ("heun-churn", "s_churn", 40)
    assert _sampler_option("heun:s_noise=1.003") == ("heun", "s_noise", 1.003)
    assert _sampler_option("em:denoise=true") == ("em", "denoise", True)
    assert _sampler_option("dpm2m:schedule=edm") == ("dpm2m", "schedule", "edm")


@pytest.mark.parametrize("argv, match", [(["--curve", "rk4:3"], "'rk4' is not a sampler"),
                                         (["--curve", "ode:3"], "ode is adaptive: give it without steps"),
                                         (["--curve", "heun"], "give heun:STEPS with step counts >= 1"),
                                         (["--curve", "heun:2,x"], "give heun:STEPS"),
                                         (["--curve", "heun:0"], "give heun:STEPS")])
def test_cli_evaluate_refuses_bad_curve_points(argv, match, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", *argv])
    assert match in capsys.readouterr().err


def test_cli_evaluate_writes_the_json_through_evaluate_model(tmp_path, capsys):
    from test_cli import _write_idx  # the tiny idx writer the CLI tests use (tests/ is on sys.path)

    raw = tmp_path / "tiny" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 4), ("t10k", 3)):
        images, labels = _images(n, 3)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", (images[:, 0] * 255).round())
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    out = tmp_path / "eval"
    code = main(["evaluate", "--data-dir", tmp_path / "tiny", "--no-download", "--device", "cpu", "--no-progress",
                 "--bpd-n", "0", "--n-samples", "2", "--batch-size", "2", "--samplers", "heun", "--steps", "2",
                 "--out-dir", out])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["command"].startswith("python -m sgm_helpers evaluate") and "mnist-ve25" in saved["model"]
    assert saved["samplers"]["heun"]["score_evaluations_per_batch"] == [3]
    code = main(["evaluate", "--data-dir", tmp_path / "tiny", "--no-download", "--device", "cpu", "--no-progress",
                 "--bpd-n", "0", "--n-samples", "2", "--batch-size", "2", "--samplers", "--curve", "heun:2",
                 "dpm2m:2", "heun:3", "--json", out / "curve.json", "--out-dir", out])
    assert code == 0, capsys.readouterr().err
    curve = json.loads((out / "curve.json").read_text())["curve"]
    assert [(p["name"], p["steps"]) for p in curve] == [("heun", 2), ("heun", 3), ("dpm2m", 2)]
    code = main(["evaluate", "--data-dir", tmp_path / "tiny", "--no-download", "--device", "cpu", "--no-progress",
                 "--bpd-n", "0", "--n-samples", "2", "--batch-size", "2", "--samplers", "em", "--steps", "2",
                 "--option", "em:denoise=true", "--json", out / "options.json", "--out-dir", out])
    assert code == 0, capsys.readouterr().err
    em = json.loads((out / "options.json").read_text())["samplers"]["em"]
    assert em["options_set"] == {"denoise": True} and em["score_evaluations_per_batch"] == [3]   # + Tweedie's step
    assert saved["classifier"]["sha256"] and saved["test_images"] == 3 and saved["reference"] == "the test split"
    capsys.readouterr()
    code = main(["evaluate", "--data-dir", tmp_path / "tiny", "--no-download", "--device", "cpu", "--no-progress",
                 "--bpd-n", "1", "--bpd-batch-size", "1", "--n-samples", "2", "--batch-size", "2", "--samplers",
                 "--holdout", "2", "--json", out / "held.json", "--out-dir", out])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out   # the log names the images for what they are
    assert "accuracy" in printed and "on 2 held-out images" in printed and "bits/dim on held-out images 0 to 0" in printed
    assert "test images" not in printed
    held = json.loads((out / "held.json").read_text())
    # scored against the last two training images; the floor drawn from the other two
    assert held["reference"].startswith("the last 2 training images") and held["test_images"] == 2
    assert held["train_images"] == 2 and held["real_data_baseline"]["n"] == 2 and held["bpd"]["n"] == 1
    code = main(["evaluate", "--data-dir", tmp_path / "tiny", "--no-download", "--device", "cpu", "--no-progress",
                 "--bpd-n", "0", "--samplers", "--holdout", "4", "--json", out / "bad.json"])
    assert code == 2 and "--holdout must be below the 4 training images, got 4" in capsys.readouterr().err


# --- controllable generation ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    """Real test digits, 12 of each class (what a perfect class-conditional sampler would draw)."""
    from sgm_helpers import load_mnist

    images, labels = load_mnist(train=False)
    keep = torch.cat([torch.nonzero(labels == k)[:12, 0] for k in range(10)])
    return images[keep], labels[keep], images, labels


def test_class_conditional_quality_of_real_digits_and_of_mislabelled_ones(digits):
    from sgm_helpers.evaluation import class_conditional_quality

    x, y, test_images, test_labels = digits
    clf = load_classifier(device="cpu")
    good = class_conditional_quality(x, y, clf, test_images, test_labels, real_images=x, real_labels=y)
    assert good["n"] == 120 and good["accuracy"] > 0.95 and good["confident_share"] > 0.9
    assert set(good["per_class"]) == {str(k) for k in range(10)} and good["per_class"]["3"]["n"] == 12
    for entry in good["per_class"].values():   # the samples are the floor's digits: the same distance
        assert entry["frechet_distance"] == pytest.approx(entry["frechet_floor"])
    bad = class_conditional_quality(x, (y + 1) % 10, clf, test_images, test_labels)   # every label wrong
    assert bad["accuracy"] < 0.05 and bad["mean_class_frechet_distance"] > 2 * good["mean_class_frechet_distance"]
    assert "frechet_floor" not in bad["per_class"]["0"]
    json.dumps(good)
    with pytest.raises(ValueError, match=r"labels must have shape \[120\]"):
        class_conditional_quality(x, y[:5], clf, test_images, test_labels)


def test_nearest_neighbour_fill_copies_the_unknown_pixels_of_the_nearest_pool_image(digits):
    from sgm_helpers.controllable import region_mask
    from sgm_helpers.evaluation import nearest_neighbour_fill

    x, _, _, _ = digits
    pool = x[10:]
    mask = region_mask("bottom")
    query = x[[12, 40, 100]].clone()
    query[..., 14:, :] = 0.5                                   # whatever is under the mask is not read
    filled = nearest_neighbour_fill(query, mask, pool, batch_size=2)
    assert torch.equal(filled[..., :14, :], query[..., :14, :])                  # the known pixels, exactly
    assert torch.equal(filled[..., 14:, :], x[[12, 40, 100]][..., 14:, :])        # each is in the pool itself


def test_evaluate_controllable_script_writes_inpainting_and_super_resolution_results(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "evaluate_controllable.py"
    spec = importlib.util.spec_from_file_location("evaluate_controllable", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["inpaint", "--regions", "bottom", "square", "--n", "3", "--steps", "2", "--batch-size", "2",
                 "--device", "cpu", "--json", str(tmp_path / "inpaint.json")])
    inpainting = json.loads((tmp_path / "inpaint.json").read_text())
    assert set(inpainting["regions"]) == {"bottom", "square"} and inpainting["n"] == 3
    assert all(r["known_pixels_kept_exactly"] for r in inpainting["regions"].values())
    assert 0 <= inpainting["regions"]["bottom"]["nearest_neighbour_accuracy"] <= 1
    bottom = inpainting["regions"]["bottom"]
    assert len(bottom["inpaint_correct"]) == 3 and sum(bottom["inpaint_correct"]) / 3 == bottom["inpaint_accuracy"]
    script.main(["super-resolution", "--factors", "2", "--n", "2", "--steps", "2", "--device", "cpu",
                 "--json", str(tmp_path / "sr.json")])
    sr = json.loads((tmp_path / "sr.json").read_text())["factors"]["2"]
    assert sr["block_means_max_error"] < 1e-5 and set(sr) >= {"super_resolve", "block_repeat", "nearest_neighbour"}
    assert json.loads((tmp_path / "sr.json").read_text())["resamplings"] == 1  # super_resolve's default
    script.main(["inpaint", "--regions", "bottom", "--n", "2", "--steps", "2", "--resamplings", "1", "--device", "cpu",
                 "--reconstruction-guidance", "0", "--json", str(tmp_path / "inpaint_u1.json")])
    capsys.readouterr()
    script.main(["table", str(tmp_path / "inpaint.json"), str(tmp_path / "inpaint_u1.json"), str(tmp_path / "sr.json")])
    tables = capsys.readouterr().out
    first_two = sum(bottom["inpaint_correct"][:2]) / 2
    assert f"| bottom half | 2 | 2 | no | 2 | 3 | {bottom['inpaint_accuracy']:.1%} | {first_two:.1%} |" in tables
    assert "| bottom half | 0 | 1 | no | 2 | 2 |" in tables and "| the centre square |" in tables
    assert "| 2 | 14x14 | 2 |" in tables
    # settings are chosen on held-out training digits; their runs are not tabulated with the test runs
    script.main(["inpaint", "--split", "holdout", "--regions", "right", "--n", "2", "--steps", "2", "--device", "cpu",
                 "--json", str(tmp_path / "inpaint_holdout.json")])
    held_out = json.loads((tmp_path / "inpaint_holdout.json").read_text())
    assert held_out["split"] == "holdout" and held_out["guidance"] == 2.0 and held_out["corrector"] is False
    assert held_out["resamplings"] == 2
    with pytest.raises(SystemExit, match="different --split"):
        script.main(["table", str(tmp_path / "inpaint.json"), str(tmp_path / "inpaint_holdout.json")])
    script.main(["guidance", "--method", "classifier", "--scales", "0", "2", "--per-class", "2", "--steps", "2",
                 "--batch-size", "8", "--device", "cpu", "--json", str(tmp_path / "guidance.json"),
                 "--plot", str(tmp_path / "guidance.png")])
    guidance = json.loads((tmp_path / "guidance.json").read_text())
    assert guidance["models"] == ["mnist-ve25", "mnist-time-classifier"] and set(guidance["scales"]) == {"0", "2"}
    assert guidance["scales"]["2"]["n"] == 20 and guidance["scales"]["2"]["score_evaluations_per_batch"] == [2, 2, 2]
    assert (tmp_path / "guidance.png").is_file() and "wrote" in capsys.readouterr().out
    assert set(guidance["model_sha256"]) == {"mnist-ve25", "mnist-time-classifier"}
    # a sweep split over processes merges into one figure and table; a scale found twice is an error
    for scales, name in ((["1"], "cfg_a"), (["3"], "cfg_b"), (["3"], "cfg_c")):
        script.main(["guidance", "--method", "cfg", "--scales", *scales, "--per-class", "2", "--steps", "2",
                     "--device", "cpu", "--json", str(tmp_path / f"{name}.json")])
    script.main(["plot", str(tmp_path / "cfg_b.json"), str(tmp_path / "cfg_a.json"), "--out", str(tmp_path / "cfg.png")])
    table = capsys.readouterr().out.splitlines()
    assert (tmp_path / "cfg.png").is_file()
    assert [line.split("|")[1].strip() for line in table if line.startswith("| ") and line[2].isdigit()] == ["1", "3"]
    with pytest.raises(SystemExit, match="scale 3 found twice"):
        script.main(["plot", str(tmp_path / "cfg_b.json"), str(tmp_path / "cfg_c.json"), "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match="differs .* in method"):
        script.main(["plot", str(tmp_path / "cfg_a.json"), str(tmp_path / "guidance.json"), "--out", str(tmp_path / "x.png")])
