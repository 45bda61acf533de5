"""Sanity checks for attribution maps (Adebayo et al., NeurIPS 2018) — beyond the paper.

A map that explains a network's decision must change when the network does.
Three checks, each comparing the maps of a reference network with those of a
modified one (or of another class) on the same images:

- **model-parameter randomisation** (``parameter_randomisation``): re-draw the
  weights of the layers from the top down, one more layer at a time
  ("cascading"), or one layer at a time with the others trained
  ("independent"), and compare each method's maps with the trained ones;
- **data randomisation** (``train_label_pair`` and ``compare_networks``):
  train the same architecture on true and on permuted labels (the second can
  only memorise), and compare the two networks' maps;
- **class sensitivity** (``class_sensitivity``): compare the map of the top
  class with the maps of the other classes on the same image.

Similarity, per image, between two maps a and b of shape (H, W):

    spearman_abs   Spearman rank correlation of |a| and |b| (their Fig. 4)
    spearman       Spearman rank correlation of the signed a and b
    ssim           structural similarity of a and b, each scaled to [0, 1]
                   by its own max |.| (one 7x7 uniform window, their choice
                   of scikit-image's defaults; computed here, no skimage)

A method passes the randomisation checks when these similarities fall towards
0 as the network is randomised; it fails when they stay high — the map is
then (largely) a function of the input alone, e.g. an edge detector.
The maps are ``attribution.attribution_map`` of each method: (N, H, W).

The functions take any ``Sequential``, including an ImageNet VGG-16 whose
conv layers are named ``block5_conv3`` ... ``block1_conv1`` (give the
cascade order with ``layers=``; ``group_blocks`` turns such names into the
block5 ... block1 cascade of the paper).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from ..engine.backend import get_array_module, to_device, to_numpy
from ..errors import TinyconvError
from ..layers import Conv2d, Linear
from ..progress import Progress
from . import attribution

__all__ = [
    "spearman",
    "ssim",
    "similarity",
    "parameter_layers",
    "group_blocks",
    "randomise",
    "parameter_randomisation",
    "train_label_pair",
    "compare_networks",
    "class_sensitivity",
    "edge_map",
    "edge_similarity",
    "Table",
    "Randomisation",
    "METHODS",
    "maps",
    "method_options",
    "randomisation_table",
    "summary_table",
    "SIMILARITIES",
]

SIMILARITIES = ("spearman_abs", "spearman", "ssim")


# ----------------------------------------------------------------------------
# similarity of two maps


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their mean rank (as scipy.stats.rankdata − 1)."""
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    ranks = np.empty(len(v), dtype=np.float64)
    # ties: every value of a run of equal values gets the mean of its positions
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], len(v)]
    mean_rank = (starts + ends - 1) / 2.0
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def spearman(a, b) -> float:
    """Spearman rank correlation of two arrays (flattened): Pearson of their ranks.

    When both are constant the (trivial) rankings agree: 1; when only one
    is, there is no ranking to agree with: 0."""
    ra, rb = (
        _ranks(np.ravel(to_numpy(a)).astype(np.float64)),
        _ranks(np.ravel(to_numpy(b)).astype(np.float64)),
    )
    ra, rb = ra - ra.mean(), rb - rb.mean()
    sa, sb = (ra * ra).sum(), (rb * rb).sum()
    if sa == 0 or sb == 0:
        return 1.0 if sa == sb else 0.0
    return float((ra * rb).sum() / np.sqrt(sa * sb))


def _uniform_filter(a: np.ndarray, size: int) -> np.ndarray:
    """Mean over each size x size window fully inside ``a`` (valid part only)."""
    c = np.cumsum(np.cumsum(np.pad(a, ((1, 0), (1, 0))), axis=0), axis=1)
    s = c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]
    return s / (size * size)


def ssim(a, b, window: int = 7) -> float:
    """Structural similarity (Wang et al. 2004) of two maps (H, W) in [0, 1]:

        SSIM = mean over windows of (2 μa μb + C1)(2 σab + C2) / ((μa² + μb² + C1)(σa² + σb² + C2))

    with C1 = 0.01², C2 = 0.03² (data range 1), a uniform ``window`` x
    ``window`` window and sample covariances (N − 1), as scikit-image's
    ``structural_similarity`` defaults; the window shrinks to the map's
    size for tiny maps."""
    a, b = np.asarray(to_numpy(a), np.float64), np.asarray(to_numpy(b), np.float64)
    w = min(window, a.shape[0], a.shape[1])
    if w < 2:
        return float(a.ravel()[0] == b.ravel()[0])
    c1, c2 = 0.01**2, 0.03**2
    mean = lambda z: _uniform_filter(z, w)  # noqa: E731
    ma, mb = mean(a), mean(b)
    k = w * w / (w * w - 1.0)  # sample covariance
    va, vb, cab = k * (mean(a * a) - ma * ma), k * (mean(b * b) - mb * mb), k * (mean(a * b) - ma * mb)
    s = ((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return float(s.mean())


def _unit(m: np.ndarray) -> np.ndarray:
    top = np.abs(m).max()
    return np.abs(m) / top if top > 0 else np.abs(m)


def similarity(a, b) -> dict:
    """The three similarities of two maps (H, W) (see the module docstring)."""
    a, b = np.asarray(to_numpy(a), np.float64), np.asarray(to_numpy(b), np.float64)
    return {
        "spearman_abs": spearman(np.abs(a), np.abs(b)),
        "spearman": spearman(a, b),
        "ssim": ssim(_unit(a), _unit(b)),
    }


def _mean_similarity(maps_a, maps_b) -> dict:
    rows = [similarity(a, b) for a, b in zip(maps_a, maps_b, strict=True)]
    return {k: float(np.mean([r[k] for r in rows])) for k in SIMILARITIES}


# ----------------------------------------------------------------------------
# randomising layers


def parameter_layers(net) -> list[str]:
    """Names of the layers with weights (conv and dense), from the top (output) down."""
    return [layer.name for layer in reversed(net.layers) if isinstance(layer, (Conv2d, Linear))]


def group_blocks(names) -> list[list[str]]:
    """Group layer names by their prefix before the first "_" or ".", keeping
    the order: ["block5_conv3", "block5_conv2", "block4_conv3"] ->
    [["block5_conv3", "block5_conv2"], ["block4_conv3"]] (VGG-16's blocks)."""
    groups: list[list[str]] = []
    for name in names:
        key = name.replace(".", "_").split("_")[0]
        if groups and groups[-1][0].replace(".", "_").split("_")[0] == key:
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups


def randomise(net, names, seed: int = 0):
    """A copy of ``net`` whose layers ``names`` have freshly drawn weights.

    Each weight is drawn from N(0, σ²) with σ the standard deviation of the
    trained weight of that layer (the scale stays; the structure goes), and
    the bias is re-drawn the same way: Adebayo et al. re-initialise with the
    network's initialiser, which keeps the scale in the same way."""
    out = copy.deepcopy(net)
    rng = np.random.default_rng(seed)
    for name in names:
        layer = out[name]
        for key, value in layer.params.items():
            host = to_numpy(value)
            sd = float(host.std()) or 1e-2
            fresh = rng.standard_normal(host.shape).astype(host.dtype) * sd
            layer.params[key] = to_device(fresh, out.device)
    return out


# ----------------------------------------------------------------------------
# data randomisation: the same network trained on true and on permuted labels


def train_label_pair(
    images,
    labels,
    build,
    mean: float,
    std: float,
    *,
    epochs_true: int = 15,
    max_epochs_random: int = 200,
    chunk: int = 10,
    fit_to: float = 0.99,
    lr: float = 0.05,
    batch_size: int = 128,
    seed: int = 0,
    log=None,
):
    """Train ``build()`` twice with ``tinyconv.engine.train.fit``: on the true
    labels, and on a seeded permutation of them, the second until it fits
    its training set (accuracy >= ``fit_to``) or ``max_epochs_random`` pass.

    images: (N, 28, 28) uint8; labels: (N,) ints; mean, std: normalisation
    in [0, 1] pixel units, recorded in both networks. Both runs use the same
    initial weights (seed), SGD with momentum 0.9, a constant learning rate
    and no weight decay nor flips (nothing that fights memorisation).
    Returns (net_true, net_random, record) where record holds each run's
    final training accuracy and epochs.
    """
    from ..datasets.mnist import normalise
    from ..engine.train import evaluate, fit

    log = log or (lambda msg: None)
    x = normalise(images, mean, std)
    y = np.asarray(labels, dtype=np.int64)
    permuted = np.random.default_rng(seed + 1).permutation(y)
    record = {"train_size": int(len(y)), "lr": lr, "batch_size": batch_size, "seed": seed,
              "permuted_label_agreement": float((permuted == y).mean())}  # fmt: skip
    nets = {}
    for which, target, budget in (("true", y, epochs_true), ("random", permuted, max_epochs_random)):
        net = build()
        net.mean, net.std = (float(mean),), (float(std),)
        done, acc, first = 0, 0.0, True
        while done < budget:
            k = min(chunk, budget - done)
            # fit restarts its epoch counter: vary the seed per chunk so the shuffles differ
            fit(net, x, target, epochs=k, batch_size=batch_size, lr=lr, momentum=0.9, weight_decay=0.0,
                schedule="constant", seed=seed + done, init=first, progress=False)  # fmt: skip
            first, done = False, done + k
            acc = evaluate(net, x, target)
            log(f"{which} labels: {done} epochs, training accuracy {acc:.4f}")
            if which == "random" and acc >= fit_to:
                break
        net.meta["label_randomisation"] = {"labels": which, "epochs": done, "train_acc": acc, **record}
        record[f"{which}_epochs"], record[f"{which}_train_acc"] = done, acc
        nets[which] = net.eval()
    return nets["true"], nets["random"], record


# ----------------------------------------------------------------------------
# the checks

#: every method tinyconv has, in the order of the tables and pictures
METHODS = tuple(attribution.METHODS)


def method_options(net) -> dict:
    """Per-method options that keep the checks quick on small and large nets:
    16 Gauss-Legendre nodes, 10 SmoothGrad samples, an occlusion window of
    about 1/7 of the input side with half its size as stride, and at most
    16 images per pass for inputs of 128 pixels and more (VGG-16)."""
    side = min(net.input_shape[1:]) if net.input_shape else 28
    w = max(2, side // 7)
    batch = 16 if side >= 128 else 256  # ImageNet-sized inputs: bounded memory per pass
    return {
        "integrated_gradients": {"steps": 16, "batch_size": batch},
        "smoothgrad": {"samples": 10},
        "occlusion": {"window": (w, w), "stride": (max(1, w // 2),) * 2, "batch_size": batch},
    }


def maps(net, x, methods=METHODS, targets=None, options=None) -> dict:
    """method -> (N, H, W) host float64 maps of ``attribution_map``; targets
    None = each image's top class (resolved once, on the given net)."""
    opts = {**method_options(net), **(options or {})}
    if targets is None:
        targets = attribution.resolve_targets(None, attribution._eval_scores(net, x))
    return {
        m: to_numpy(attribution.attribution_map(net, x, m, targets, **opts.get(m, {}))).astype(np.float64)
        for m in methods
    }


@dataclass
class Randomisation:
    """What ``parameter_randomisation`` returns.

    steps:  labels of the columns: "trained", then each randomised layer (or
            group), e.g. "fc_layers.2", in the order randomised;
    maps:   method -> list over steps of (N, H, W) maps;
    scores: method -> list over steps of {similarity: mean over images};
    mode:   "cascading" or "independent".
    """

    mode: str
    steps: list
    maps: dict
    scores: dict
    targets: np.ndarray = field(default=None)


def _labels(group) -> str:
    return (
        group
        if isinstance(group, str)
        else "+".join(group)
        if len(group) <= 2
        else f"{group[0]}..{group[-1]}"
    )


def parameter_randomisation(
    net, x, methods=METHODS, mode: str = "cascading", layers=None, targets=None, options=None, seed: int = 0,
    progress: bool = True,
) -> Randomisation:  # fmt: skip
    """The model-parameter randomisation test (Adebayo et al. 2018, §3.1).

    layers: what to randomise, top down: a list of layer names, or of lists
            of names randomised together (a VGG block); default every conv
            and dense layer from the output down (``parameter_layers``).
    mode:   "cascading" — step k has the top k groups randomised (each
            group drawn once, kept in the later steps);
            "independent" — step k has only group k randomised.
    seed:   group k is drawn from seed + k.
    The targets stay those of the trained network (default its top class),
    so every map explains the same class. Each step's maps are compared with
    the trained ones by ``similarity`` (mean over the images).
    """
    if mode not in ("cascading", "independent"):
        raise TinyconvError(f"unknown randomisation mode {mode!r}; expected 'cascading' or 'independent'")
    groups = [[g] if isinstance(g, str) else list(g) for g in (layers or parameter_layers(net))]
    for g in groups:
        for name in g:
            try:
                net.index(name)
            except (KeyError, IndexError) as exc:
                raise TinyconvError(f"randomisation layers: {exc.args[0]}") from None
    if targets is None:
        targets = attribution.resolve_targets(None, attribution._eval_scores(net, x))
    trained = maps(net, x, methods, targets, options)
    out = Randomisation(mode, ["trained"], {m: [trained[m]] for m in methods}, {}, np.asarray(targets))
    randomised = net
    with Progress(len(groups), f"randomisation ({mode})", disable=not progress) as bar:
        for k, g in enumerate(groups):
            # cascading: the previous step's draws stay and one more group is re-drawn
            randomised = randomise(randomised if mode == "cascading" else net, g, seed=seed + k)
            step = maps(randomised, x, methods, targets, options)
            out.steps.append(_labels(g))
            for m in methods:
                out.maps[m].append(step[m])
            bar.update(1)
    out.scores = {m: [_mean_similarity(trained[m], s) for s in out.maps[m]] for m in methods}
    return out


def compare_networks(net_a, net_b, x, methods=METHODS, targets=None, options=None) -> dict:
    """method -> {similarity: mean over images} between the maps of two
    networks on the same images and targets (default: net_a's top class).
    The data randomisation test: net_a trained on true labels, net_b on
    permuted ones. Returns also the maps under "maps": method -> (a, b)."""
    if targets is None:
        targets = attribution.resolve_targets(None, attribution._eval_scores(net_a, x))
    ma, mb = maps(net_a, x, methods, targets, options), maps(net_b, x, methods, targets, options)
    result = {m: _mean_similarity(ma[m], mb[m]) for m in methods}
    result["maps"] = {m: (ma[m], mb[m]) for m in methods}
    return result


def class_sensitivity(net, x, methods=METHODS, others: int | None = None, options=None) -> dict:
    """method -> {similarity: mean over images and other classes} between
    the map of each image's top class and the maps of the other classes
    (all of them, or the ``others`` next-highest-scoring). A class-sensitive
    method gives low values; guided backprop and DeconvNet are known to give
    nearly the same map for every class (Mahendran & Vedaldi 2016)."""
    scores = to_numpy(attribution._eval_scores(net, x))
    n, k = scores.shape
    order = np.argsort(-scores, axis=1)  # classes by score, top first
    take = k - 1 if others is None else min(int(others), k - 1)
    xp = get_array_module(x)
    reps = xp.concatenate([x] * (take + 1))  # row r·N + i: image i, class order[i, r]
    targets = np.concatenate([order[:, r] for r in range(take + 1)])
    all_maps = maps(net, reps, methods, targets, options)
    result = {}
    for m in methods:
        top = all_maps[m][:n]
        rows = [similarity(top[i], all_maps[m][r * n + i]) for r in range(1, take + 1) for i in range(n)]
        result[m] = {s: float(np.mean([row[s] for row in rows])) for s in SIMILARITIES}
    return result


def edge_map(x) -> np.ndarray:
    """A model-free reference map: the Sobel gradient magnitude of the input,
    max over channels (Adebayo et al.'s "edge detector"): (N, C, H, W) -> (N, H, W)."""
    a = np.asarray(to_numpy(x), np.float64)
    p = np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    gx = (p[..., :-2, 2:] + 2 * p[..., 1:-1, 2:] + p[..., 2:, 2:]) - (
        p[..., :-2, :-2] + 2 * p[..., 1:-1, :-2] + p[..., 2:, :-2]
    )
    gy = (p[..., 2:, :-2] + 2 * p[..., 2:, 1:-1] + p[..., 2:, 2:]) - (
        p[..., :-2, :-2] + 2 * p[..., :-2, 1:-1] + p[..., :-2, 2:]
    )
    return np.sqrt(gx**2 + gy**2).max(axis=1)


def edge_similarity(net, x, methods=METHODS, targets=None, options=None) -> dict:
    """method -> {similarity: mean over images} between each method's map of
    the trained network and ``edge_map(x)``, which knows nothing of the
    network. High values: the map is largely a function of the input's edges."""
    ref = edge_map(x)
    got = maps(net, x, methods, targets, options)
    return {m: _mean_similarity(ref, got[m]) for m in methods}


# ----------------------------------------------------------------------------
# tables


@dataclass
class Table:
    """A markdown table: header cells and rows of cells (numbers formatted to 2 decimals)."""

    header: list
    rows: list = field(default_factory=list)

    def markdown(self) -> str:
        cell = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
        lines = ["| " + " | ".join(map(str, self.header)) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines)


def randomisation_table(result: Randomisation, what: str = "spearman_abs") -> Table:
    """Rows: methods; columns: the randomisation steps; cells: ``what``."""
    t = Table(["method", *result.steps])
    for m, per_step in result.scores.items():
        t.rows.append([m, *[s[what] for s in per_step]])
    return t


def summary_table(results: dict) -> Table:
    """Rows: methods; for each named result (method -> {similarity: value})
    the three similarities as columns."""
    names = list(results)
    methods = [m for m in next(iter(results.values())) if m != "maps"]
    t = Table(["method", *[f"{name} {s}" for name in names for s in SIMILARITIES]])
    for m in methods:
        t.rows.append([m, *[results[name][m][s] for name in names for s in SIMILARITIES]])
    return t
