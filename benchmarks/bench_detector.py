"""Speed of SafetyNet's RBF-SVM scoring: our exact integer kernel vs ``sklearn.svm.SVC.decision_function``.

Both score the *same* fitted support vectors. Run at one thread, niced (see benchmarks/README.md)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_detector.py --out benchmarks/results/detector.json

``--source random`` (default) draws 1,024-bit codes from two overlapping Bernoulli classes
(so thousands of training codes become support vectors); ``--source cifar`` uses real codes:
CIFAR-10 test images through a randomly initialised ResNet-20, ``layer3.2.relu`` average-pooled
to 4x4 (64 x 16 = 1,024 units), binarised at the per-unit median; the positive class is the
same images with +-8/255 sign noise. ``--levels 4`` gives quaternary codes instead.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np
import torch


def random_codes(n: int, d: int, levels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Per-unit level probabilities of the two classes differ slightly: overlapping classes.
    base = rng.dirichlet(np.ones(levels), size=d)  # (d, L)
    shift = rng.dirichlet(np.ones(levels), size=d)
    probs = [base, 0.85 * base + 0.15 * shift]
    y = rng.integers(0, 2, n)
    X = np.empty((n, d), np.uint8)
    for c in (0, 1):
        rows = np.flatnonzero(y == c)
        cdf = probs[c].cumsum(1)  # (d, L)
        u = rng.random((len(rows), d))
        X[rows] = (u[:, :, None] > cdf[None, :, :-1]).sum(2)
    return X, y


def cifar_codes(n: int, levels: int, seed: int, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    from safetynet.codes import ActivationQuantizer, layer_activations
    from safetynet.data import load_dataset
    from safetynet.models import build_model

    torch.manual_seed(seed)
    data = load_dataset("cifar10", "test", data_dir)
    half = n // 2
    x = data.images_u8[:half].float() / 255
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 2, x.shape, generator=gen).float().mul_(2).sub_(1) * (8 / 255)
    xa = (x + noise).clamp(0, 1)
    model = build_model("resnet20").eval()
    layer = "layer3.2.relu"
    a_nat = layer_activations(model, x, [layer], pool=4)[layer]
    a_adv = layer_activations(model, xa, [layer], pool=4)[layer]
    q = ActivationQuantizer(levels=levels).fit(a_nat)
    X = np.concatenate([q.transform(a_nat), q.transform(a_adv)])
    y = np.r_[np.zeros(len(x), np.int64), np.ones(len(xa), np.int64)]
    perm = np.random.default_rng(seed).permutation(len(y))
    return X[perm], y[perm]


def popcount_scores(X: np.ndarray, sv: np.ndarray, alpha: np.ndarray, b: float, gamma: float,
                    block: int = 64) -> np.ndarray:
    """Binary codes only: XOR + np.bitwise_count on uint64 words (an alternative we measured)."""
    pad = (-X.shape[1]) % 64
    xp = np.packbits(np.pad(X, ((0, 0), (0, pad))), axis=1).view(np.uint64)
    sp = np.packbits(np.pad(sv, ((0, 0), (0, pad))), axis=1).view(np.uint64)
    out = np.empty(len(X))
    for i in range(0, len(X), block):
        dist = np.bitwise_count(xp[i:i + block, None, :] ^ sp[None]).sum(-1, dtype=np.int64)
        out[i:i + block] = np.exp(-gamma * dist) @ alpha + b
    return out


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=["random", "cifar"], default="random")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder for --source cifar")
    p.add_argument("--levels", type=int, default=2, choices=[2, 4])
    p.add_argument("--features", type=int, default=1024, help="code length for --source random")
    p.add_argument("--train", type=int, default=4000, help="codes used to fit the SVC")
    p.add_argument("--queries", type=int, default=10000)
    p.add_argument("--gamma-multiplier", type=float, default=4.0,
                   help="gamma = multiplier / median squared distance between training codes")
    p.add_argument("--C", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=3, help="best of N for our kernel (sklearn runs once)")
    p.add_argument("--variants", action="store_true", help="also time the float32-GEMM and popcount variants")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    import sklearn
    from sklearn.svm import SVC

    from safetynet.detectors import kernel as kmod
    from safetynet.detectors.kernel import CodeRBFKernel, squared_distances

    n = args.train + args.queries
    if args.source == "random":
        X, y = random_codes(n, args.features, args.levels, args.seed)
    else:
        X, y = cifar_codes(n, args.levels, args.seed, args.data_dir)
    Xtr, ytr, Xq = X[:args.train], y[:args.train], X[args.train:args.train + args.queries]
    sub = Xtr[:500]
    dist = squared_distances(sub, sub)[~np.eye(len(sub), dtype=bool)]
    gamma = args.gamma_multiplier / float(np.median(dist))

    t_fit, svc = timed(lambda: SVC(kernel="rbf", gamma=gamma, C=args.C).fit(Xtr.astype(np.float64), ytr))
    sv = Xtr[svc.support_]
    t_sk, ref = timed(lambda: svc.decision_function(Xq.astype(np.float64)))
    t_prep, kern = timed(lambda: CodeRBFKernel(sv, svc.dual_coef_, float(svc.intercept_[0]), gamma))
    t_ours, ours = timed(lambda: kern.decision_function(Xq), args.repeat)
    result = {
        "benchmark": "detector_decision_function",
        "source": args.source, "levels": args.levels, "n_features": int(X.shape[1]), "n_train": args.train,
        "n_queries": len(Xq), "n_support_vectors": int(len(sv)), "gamma": gamma, "C": args.C,
        "sklearn_fit_seconds": round(t_fit, 3),
        "sklearn_decision_seconds": round(t_sk, 3),
        "ours_prepare_seconds": round(t_prep, 4),
        "ours_decision_seconds": round(t_ours, 4),
        "ours_mode": kern._mode(int(Xq.max())),
        "speedup": round(t_sk / t_ours, 1),
        "max_abs_score_diff": float(np.abs(ours - ref).max()),
        "decision_agreement": float(np.mean((ours > 0) == (ref > 0))),
        "predict_agreement": float(np.mean(svc.classes_[(ours > 0).astype(int)] == svc.predict(Xq.astype(np.float64)))),
        "threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
                     "sklearn": sklearn.__version__},
        "cpu": platform.processor() or platform.machine(),
    }
    if args.variants:
        saved = kmod._HAS_INT_MM
        kmod._HAS_INT_MM = False
        try:
            kf = CodeRBFKernel(sv, svc.dual_coef_, float(svc.intercept_[0]), gamma)
            t_f32, s_f32 = timed(lambda: kf.decision_function(Xq), args.repeat)
        finally:
            kmod._HAS_INT_MM = saved
        result["variant_float32_gemm_seconds"] = round(t_f32, 4)
        result["variant_float32_gemm_max_abs_diff"] = float(np.abs(s_f32 - ref).max())
        if args.levels == 2:
            t_pc, s_pc = timed(lambda: popcount_scores(Xq, sv, svc.dual_coef_[0], float(svc.intercept_[0]), gamma))
            result["variant_popcount_seconds"] = round(t_pc, 4)
            result["variant_popcount_max_abs_diff"] = float(np.abs(s_pc - ref).max())
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from safetynet._io import write_json_atomic

        write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
