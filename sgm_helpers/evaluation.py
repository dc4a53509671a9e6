"""Evaluating a score model the way the model card does: bits/dim on test images and sample quality per sampler.

:func:`evaluate_model` is the one pipeline behind ``python -m sgm_helpers evaluate``: it takes a model, its
SDE and the data, and returns a JSON-ready dict; :func:`draw_samples` draws many samples in batches with a
sampler from the registry and counts score evaluations. Adding a model adds no code path.
"""

from __future__ import annotations

import inspect
import platform
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .likelihood import DEFAULT_EPS
from .samplers import SAMPLERS, sample
from .utils import check_eps, check_positive_int


def draw_samples(sampler: str, score_model, sde, n: int, *, shape=(1, 28, 28), steps: int | None = None,
                 batch_size: int = 500, generator: torch.Generator | None = None, device=None, progress: bool = True,
                 **options) -> tuple[torch.Tensor, list[int], float]:
    """``n`` samples ``[n, *shape]`` on the CPU, drawn in batches with the sampler registered as ``sampler``.

    ``steps`` (None: the sampler's default) and ``options`` (``snr``, ``eps``, ``s_churn``...) go to
    :func:`~sgm_helpers.samplers.sample`. Returns ``(samples, score evaluations per batch, wall seconds)``.
    """
    n, batch_size = check_positive_int(n, "n"), check_positive_int(batch_size, "batch_size")
    device = torch.device(device) if device is not None else None
    out, nfe = [], []
    t0 = time.perf_counter()
    sizes = [min(batch_size, n - i) for i in range(0, n, batch_size)]
    for b in tqdm(sizes, desc=f"{sampler} batches", disable=not progress or len(sizes) == 1):
        x, calls = sample(sampler, score_model, sde, (b, *shape), num_steps=steps, generator=generator, device=device,
                          progress=progress, **options)
        out.append(x.cpu())
        nfe.append(calls)
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return torch.cat(out), nfe, time.perf_counter() - t0


# set by evaluate_model's own arguments (steps, eps, snr, seed, device...), not per sampler
_NOT_OPTIONS = {"num_steps", "eps", "snr", "z", "device", "generator", "progress", "callback"}


def sampler_settings(name: str) -> list[str]:
    """The settings of the sampler registered as ``name`` that ``evaluate_model(options=...)`` may replace."""
    params = inspect.signature(SAMPLERS[name].fn).parameters
    return sorted(k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in _NOT_OPTIONS)


def evaluate_model(score_model, sde, *, test_images: torch.Tensor, test_labels: torch.Tensor,
                   train_images: torch.Tensor, classifier, samplers=("em", "pc", "ode"), n_samples: int = 2000,
                   batch_size: int = 500, steps: int | None = None, snr: float = 0.16, eps: float = 1e-3,
                   bpd_n: int = 10000, bpd_start: int = 0, bpd_batch_size: int = 100, bpd_eps: float = DEFAULT_EPS,
                   hutchinson: str = "rademacher",
                   curve: dict | None = None, options: dict | None = None, seed: int = 0, device=None,
                   progress: bool = True, grid_dir=None, on_update=None, log=print,
                   images_name: str = "test images") -> dict:
    """The model card's numbers for one model, as a JSON-ready dict.

    - ``classifier``: the evaluation classifier's accuracy on the test images;
    - ``real_data_baseline``: ``n_samples`` training images scored like samples (the Fréchet distance floor);
    - ``bpd``: bits/dim on ``bpd_n`` test images from index ``bpd_start`` on (mean, standard error, every
      image's value, score evaluations per batch) with ``hutchinson`` probes, the data placed at t = ``bpd_eps``
      (see :func:`~sgm_helpers.likelihood.evaluate_bpd`), seeded by ``seed + bpd_start``, so that disjoint ranges
      run in separate processes are a reproducible split of one evaluation (``scripts/model_card_tables.py``
      merges them);
    - ``samplers[name]``: for each sampler, the Fréchet distance to the test images in the classifier's
      features (clipped samples, and unclipped), the confidently classified share, the class histogram,
      score evaluations and wall time; with ``grid_dir``, a grid of the first 64 samples is saved there;
    - ``curve``: with ``curve = {sampler: [steps, ...]}`` (``[None]`` for an adaptive sampler), the same for
      every sampler at every step count, in the order given: Fréchet distance against score evaluations.
      Every point draws from the same seed, so the deterministic samplers start from the same latents;
    - ``options = {sampler: {setting: value}}`` replaces settings of a sampler's function wherever that sampler
      runs (e.g. ``{"heun-churn": {"s_churn": 40.0}, "em": {"denoise": True}}``, to choose them on held-out
      images); each result records its settings under ``options`` and the ones set here under ``options_set``.

    Every random draw is seeded by ``seed``. ``on_update(results)`` is called after each part (to save
    partial results); ``log`` prints one line per part, calling ``test_images`` by ``images_name`` (e.g.
    "held-out images" where they are held-out training images).
    """
    from .classifier import classifier_accuracy
    from .likelihood import evaluate_bpd
    from .metrics import classifier_features, frechet_distance, sample_quality
    from .plotting import save_image_grid

    if bpd_start < 0 or bpd_start + bpd_n > len(test_images):
        raise ValueError(f"bpd_start = {bpd_start} and bpd_n = {bpd_n} must select images of test_images "
                         f"(indices 0 to {len(test_images) - 1})")
    bpd_eps = check_eps(bpd_eps, "bpd_eps")
    curve = {name: list(steps_list) for name, steps_list in (curve or {}).items()}
    options = {name: dict(settings) for name, settings in (options or {}).items()}
    unknown = [s for s in [*samplers, *curve, *options] if s not in SAMPLERS]
    if unknown:
        raise ValueError(f"samplers must be names from {sorted(SAMPLERS)}, got {unknown}")
    for name, settings in options.items():
        allowed = sampler_settings(name)
        if not set(settings) <= set(allowed):
            raise ValueError(f"options[{name!r}] may set {allowed}, got {sorted(settings)}")
    for name, steps_list in curve.items():
        adaptive = SAMPLERS[name].default_steps is None
        if not steps_list or not all(k is None if adaptive else type(k) is int and k >= 1 for k in steps_list):
            raise ValueError(f"curve[{name!r}] must be " + ("[None] (the sampler is adaptive)" if adaptive else
                             "a list of step counts >= 1") + f", got {steps_list}")
    update = on_update or (lambda results: None)
    results = {"sde": sde.config(), "device": str(device), "torch": torch.__version__,
               "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "seed": seed,
               "test_images": len(test_images), "train_images": len(train_images)}

    acc = classifier_accuracy(classifier, test_images, test_labels)
    results["classifier"] = {"test_accuracy": acc, "test_images": len(test_images)}
    log(f"classifier: accuracy {acc:.4f} on {len(test_images)} {images_name}")
    reference = classifier_features(classifier, test_images)
    n_real = min(n_samples, len(train_images))
    real = train_images[torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed))[:n_real]]
    results["real_data_baseline"] = {
        "what": f"{n_real} MNIST training images scored like samples: the Fréchet distance real digits reach "
                "at this sample size",
        **sample_quality(real, classifier, reference, clip=True).to_dict()}
    log(f"baseline, {n_real} real training images: Fréchet distance "
        f"{results['real_data_baseline']['frechet_distance']:.2f}")
    update(results)

    if bpd_n:
        t0 = time.perf_counter()
        bpd = evaluate_bpd(score_model, sde, test_images[bpd_start:bpd_start + bpd_n], batch_size=bpd_batch_size,
                           generator=torch.Generator().manual_seed(seed + bpd_start), progress=progress,
                           device=device, hutchinson=hutchinson, eps=bpd_eps)
        results["bpd"] = {"n": bpd_n, "start": bpd_start, "mean": bpd.mean, "stderr": bpd.stderr,
                          "batch_size": bpd_batch_size, "hutchinson": hutchinson, "eps": bpd_eps,
                          "nfe_per_batch_mean": sum(bpd.nfe) / len(bpd.nfe), "nfe_per_batch": bpd.nfe,
                          "wall_s": time.perf_counter() - t0,
                          "per_image": [round(v, 6) for v in bpd.bpd.double().tolist()]}
        log(f"bits/dim on {images_name} {bpd_start} to {bpd_start + bpd_n - 1}: {bpd.mean:.3f} ± {bpd.stderr:.3f} "
            f"({results['bpd']['nfe_per_batch_mean']:.0f} function evaluations per batch of {bpd_batch_size})")
        update(results)

    def quality(name, name_steps):
        """Samples of one sampler at one step count, scored: ``(entry, samples)``."""
        chosen = options.get(name, {})
        x, nfe, wall = draw_samples(name, score_model, sde, n_samples, shape=tuple(test_images.shape[1:]),
                                    steps=name_steps, batch_size=batch_size,
                                    generator=torch.Generator().manual_seed(seed), device=device, progress=progress,
                                    eps=eps, **({"snr": snr} if name == "pc" else {}), **chosen)
        settings = {**SAMPLERS[name].options, **chosen}
        clipped = sample_quality(x, classifier, reference, clip=True)
        log(f"{name}, {name_steps or 'adaptive'} steps{''.join(f', {k} = {v}' for k, v in chosen.items())}: "
            f"{clipped}; score evaluations per batch of {batch_size}: {nfe}; {wall:.1f} s")
        return {"sampler": SAMPLERS[name].label, "steps": name_steps, "snr": snr if name == "pc" else None,
                "eps": eps, **({"options": settings} if settings else {}),
                **({"options_set": chosen} if chosen else {}),
                "batch_size": batch_size, "score_evaluations_per_batch": nfe, "wall_s": wall,
                "wall_s_per_sample": wall / len(x), **clipped.to_dict(),
                "frechet_distance_unclipped": frechet_distance(classifier_features(classifier, x), reference)}, x

    results["samplers"] = {}
    for name in samplers:
        default_steps = SAMPLERS[name].default_steps
        entry, x = quality(name, None if default_steps is None else steps or default_steps)
        if grid_dir is not None:
            entry["grid"] = str(save_image_grid(x[:64], Path(grid_dir) / f"samples_{name}.png"))
            log(f"grid: {entry['grid']}")
        results["samplers"][name] = entry
        update(results)
    if curve:
        results["curve"] = []
        for name, steps_list in curve.items():
            for name_steps in steps_list:
                entry, _ = quality(name, name_steps)
                results["curve"].append({"name": name, **entry})
                update(results)
    return results


# --- controllable generation (notebook 7): class-conditional samples and completions ----------------------


def class_conditional_quality(samples: torch.Tensor, labels: torch.Tensor, classifier, test_images: torch.Tensor,
                              test_labels: torch.Tensor, *, confidence: float = 0.9, real_images=None,
                              real_labels=None) -> dict:
    """How well samples ``[N, 1, 28, 28]`` drawn for ``labels [N]`` match their classes, as a JSON-ready dict.

    The samples are clipped to [0, 1] (as displayed). ``accuracy``: the share that ``classifier`` classifies as
    the requested label; ``confident_share``: the share whose requested label has probability >= ``confidence``;
    ``per_class[k]``: those two for label k and the Fréchet distance of its samples' features to those of the
    test digits of class k. With ``real_images`` (e.g. held-out training digits) and ``real_labels``, each
    class also gets ``frechet_floor``: the distance real digits reach at the same sample size.
    """
    from .classifier import predict_proba
    from .metrics import classifier_features, frechet_distance

    if labels.shape != (len(samples),):
        raise ValueError(f"labels must have shape [{len(samples)}], got {tuple(labels.shape)}")
    x = samples.clamp(0, 1)
    p = predict_proba(classifier, x)
    labels = labels.cpu()
    correct = p.argmax(1) == labels
    sure = p.gather(1, labels[:, None])[:, 0] >= confidence
    feats = classifier_features(classifier, x)
    per_class = {}
    for k in labels.unique().tolist():
        mine = labels == k
        reference = classifier_features(classifier, test_images[test_labels == k])
        entry = {"n": int(mine.sum()), "accuracy": float(correct[mine].double().mean()),
                 "confident_share": float(sure[mine].double().mean()),
                 "frechet_distance": frechet_distance(feats[mine], reference)}
        if real_images is not None:
            real = real_images[real_labels == k][:int(mine.sum())]
            entry["frechet_floor"] = frechet_distance(classifier_features(classifier, real), reference)
        per_class[str(k)] = entry
    fds = [e["frechet_distance"] for e in per_class.values()]
    return {"n": len(x), "accuracy": float(correct.double().mean()), "confident_share": float(sure.double().mean()),
            "confidence_threshold": confidence, "mean_class_frechet_distance": sum(fds) / len(fds),
            **({"mean_class_frechet_floor": sum(e["frechet_floor"] for e in per_class.values()) / len(per_class)}
               if real_images is not None else {}),
            "per_class": per_class}


def nearest_neighbour_fill(images: torch.Tensor, mask: torch.Tensor, pool: torch.Tensor, *,
                           batch_size: int = 256) -> torch.Tensor:
    """The inpainting baseline: each image's unknown pixels copied from the ``pool`` image nearest on the known ones.

    ``images [N, 1, H, W]``, ``mask`` 1/True on the known pixels (broadcastable, one mask for all), ``pool
    [M, 1, H, W]`` (e.g. the training digits). Nearest in squared distance over the known pixels. Returns
    ``[N, 1, H, W]`` with the known pixels of ``images`` exactly.
    """
    known = torch.as_tensor(mask, dtype=torch.bool).expand_as(images[0]).reshape(-1)
    pool_known = pool.flatten(1)[:, known].float()
    out = []
    for i in range(0, len(images), check_positive_int(batch_size, "batch_size")):
        x = images[i:i + batch_size]
        nearest = torch.cdist(x.flatten(1)[:, known].float(), pool_known).argmin(1)
        out.append(torch.where(known.view_as(x[0]), x, pool[nearest].to(x.dtype)))
    return torch.cat(out)
