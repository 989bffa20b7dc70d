"""SVM training at scale: fit time and peak memory vs N, exact solver vs Nyström (and parity features).

Codes are real: the shipped CIFAR-10 ResNet-20 (``pretrained("cifar10-resnet20")``), layer
``layer3.2.relu`` (64 x 8 x 8 = 4,096 units), binary codes (``ActivationQuantizer(levels=2)``, per-unit
median of natural training activations). Natural = training images the model classifies
correctly; adversarial = FGSM-8/255 versions of them that fool it. The CIFAR-10 test split gives the
held-out codes every fitted detector is scored on. Run at one thread, niced (benchmarks/README.md)::

    # 1. codes (once; ~25 min at one thread), cached as .npy under --cache
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/svm_scale.py codes --data-dir ../shared/data/cifar10-jpg --cache /tmp/svm-codes
    # 2. fit time / peak memory / agreement, every (solver, N) in its own subprocess
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/svm_scale.py scale --cache /tmp/svm-codes --out benchmarks/results/svm_scale.json
    # 3. Nyström vs parity random features at equal feature count
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/svm_scale.py features --cache /tmp/svm-codes --out benchmarks/results/svm_features.json

gamma and C are chosen once (``CodeSVMDetector``'s cross-validation on 3,000 training codes) and
held fixed for every solver and size, so differences come from the solver alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

LAYER = "layer3.2.relu"
EPS = 8 / 255


# ------------------------------------------------------------------------------------------- codes
def make_codes(args: argparse.Namespace) -> dict:
    """Natural and FGSM codes of the CIFAR-10 train and test splits, written to ``args.cache``."""
    from safetynet.attacks import make_attack
    from safetynet.attacks.batched import attack_in_batches, predict
    from safetynet.codes import ActivationQuantizer, layer_activations
    from safetynet.data import load_dataset
    from safetynet.models import pretrained

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    model = pretrained("cifar10-resnet20").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    fgsm = make_attack("fgsm")
    quantizer = None
    info: dict = {}
    for split in ("train", "test"):
        data = load_dataset("cifar10", split, args.data_dir)
        n = len(data.labels) if args.limit is None else min(args.limit, len(data.labels))
        nat, adv = [], []
        t0 = time.time()
        for i in range(0, n, args.chunk):
            x = data.images_u8[i:i + args.chunk].float() / 255
            y = data.labels[i:i + args.chunk]
            pred, _ = predict(model, x)
            ok = pred == y
            x, y = x[ok], y[ok]
            res = attack_in_batches(fgsm, model, x, y, eps=EPS, batch_size=256)
            a_nat = layer_activations(model, x, [LAYER])[LAYER]
            a_adv = layer_activations(model, res.clipped[res.success], [LAYER])[LAYER]
            if quantizer is None:  # per-unit median of the first chunk of natural training activations
                quantizer = ActivationQuantizer(levels=2).fit(a_nat)
            nat.append(quantizer.transform(a_nat))
            adv.append(quantizer.transform(a_adv))
            print(f"{split}: {i + len(ok)}/{n} images, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        nat_c, adv_c = np.concatenate(nat), np.concatenate(adv)
        np.save(cache / f"{split}_natural.npy", nat_c)
        np.save(cache / f"{split}_fgsm.npy", adv_c)
        info[split] = {"natural": len(nat_c), "adversarial": len(adv_c), "seconds": round(time.time() - t0, 1)}
    info.update(layer=LAYER, eps=EPS, units=int(nat_c.shape[1]), model="cifar10-resnet20",
                quantizer_fit_on=f"natural activations of the first {args.chunk} training images")
    (cache / "info.json").write_text(json.dumps(info, indent=2))
    return info


# ------------------------------------------------------------------------------------------- helpers
def probe_int8() -> dict:
    """Time torch._int_mm against a float32 product: without AVX-512 VNNI the int8 path is ~100x slower.

    Both are exact for codes; when int8 loses, the kernel's float32 path is used for the whole run
    (``safetynet.detectors.kernel._HAS_INT_MM = False``), as ``bench_detector.py --variants`` does.
    """
    from safetynet.detectors import kernel as kmod

    a = torch.randint(0, 2, (256, 1024), dtype=torch.int8)
    b = torch.randint(0, 2, (1024, 256), dtype=torch.int8)
    t0 = time.perf_counter()
    torch._int_mm(a, b)
    t_int = time.perf_counter() - t0
    af, bf = a.float(), b.float()
    t0 = time.perf_counter()
    af @ bf
    t_f32 = time.perf_counter() - t0
    use_int8 = kmod._has_int_mm() and t_int < t_f32
    if not use_int8:
        kmod._HAS_INT_MM = False
    return {"int8_gemm_seconds": round(t_int, 4), "float32_gemm_seconds": round(t_f32, 4), "distances": "int8" if use_int8 else "float32"}


def load_train(cache: Path, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` codes of a fixed shuffle of natural (0) + FGSM (1) training codes."""
    nat = np.load(cache / "train_natural.npy", mmap_mode="r")
    adv = np.load(cache / "train_fgsm.npy", mmap_mode="r")
    y_all = np.r_[np.zeros(len(nat), np.int64), np.ones(len(adv), np.int64)]
    order = np.random.default_rng(seed).permutation(len(y_all))[:n]
    order = np.sort(order)  # read the memory maps in order
    X = np.empty((len(order), nat.shape[1]), np.uint8)
    in_nat = order < len(nat)
    X[in_nat] = nat[order[in_nat]]
    X[~in_nat] = adv[order[~in_nat] - len(nat)]
    perm = np.random.default_rng(seed + 1).permutation(len(order))
    return X[perm], y_all[order][perm]


def load_test(cache: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    nat = np.load(cache / "test_natural.npy")
    adv = np.load(cache / "test_fgsm.npy")
    rng = np.random.default_rng(seed)
    nat = nat[rng.permutation(len(nat))[:n // 2]]
    adv = adv[rng.permutation(len(adv))[:n - len(nat)]]
    return np.concatenate([nat, adv]), np.r_[np.zeros(len(nat), np.int64), np.ones(len(adv), np.int64)]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


# ------------------------------------------------------------------------------------------- one fit
def fit_one(args: argparse.Namespace) -> dict:
    """One detector fit in this (fresh) process: time, peak memory, held-out scores saved to --scores."""
    from safetynet.detectors import CodeSVMDetector

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="  %(message)s")  # the solver's timings
    probe = probe_int8()
    X, y = load_train(Path(args.cache), args.n, args.seed)
    base_mb = peak_rss_mb()
    det = CodeSVMDetector(gamma=args.gamma, C=args.C, levels=2, solver=args.solver, n_components=args.components,
                          landmarks=args.landmarks, random_state=args.seed)
    t0 = time.perf_counter()
    det.fit(X, y)
    fit_s = time.perf_counter() - t0
    fit_mb = peak_rss_mb()
    del X, y
    Xt, _ = load_test(Path(args.cache), args.test, args.seed)
    t0 = time.perf_counter()
    scores = det.decision_function(Xt)
    score_s = time.perf_counter() - t0
    np.save(args.scores, scores)
    return {"solver": det.solver_, "n": args.n, "n_components": det.n_components_, "landmarks": args.landmarks,
            "fit_seconds": round(fit_s, 1), "peak_rss_mb_fit": round(fit_mb), "rss_mb_codes_loaded": round(base_mb),
            "n_expansion": int(det.support_vectors_.shape[0]), "score_seconds": round(score_s, 1),
            "distances": probe["distances"]}


def run_child(cache: str, solver: str, n: int, gamma: float, C: float, components: int, landmarks: str,
              test: int, seed: int, workdir: Path) -> tuple[dict, np.ndarray]:
    scores = workdir / f"{solver}-{n}-{components}-{landmarks}.npy"
    cmd = [sys.executable, __file__, "fit-one", "--cache", cache, "--solver", solver, "--n", str(n), "--gamma",
           repr(gamma), "--C", repr(C), "--components", str(components), "--landmarks", landmarks,
           "--test", str(test), "--seed", str(seed), "--scores", str(scores)]
    print(" ".join(cmd[2:]), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout  # stderr: the child's log
    res = json.loads(out)
    print(json.dumps(res), file=sys.stderr, flush=True)
    return res, np.load(scores)


def versions() -> dict:
    import sklearn

    return {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "sklearn": sklearn.__version__, "cpu": platform.processor() or platform.machine(), "threads": 1}


def choose_params(cache: Path, seed: int) -> tuple[float, float]:
    from safetynet.detectors import CodeSVMDetector

    X, y = load_train(cache, 3000, seed + 7)
    det = CodeSVMDetector(levels=2, solver="exact", random_state=seed).fit(X, y)
    return det.gamma_, det.C_


def scale(args: argparse.Namespace) -> dict:
    from sklearn.metrics import roc_auc_score

    probe_int8()
    cache = Path(args.cache)
    _, y_test = load_test(cache, args.test, args.seed)
    if args.gamma is None or args.C is None:
        gamma, C = choose_params(cache, args.seed)
    else:
        gamma, C = args.gamma, args.C
    rows: list[dict] = []
    exact_scores: dict[int, np.ndarray] = {}
    result = {"benchmark": "svm_scale", "codes": json.loads((cache / "info.json").read_text()), "gamma": gamma,
              "C": C, "test_codes": len(y_test), "versions": versions(), "rows": rows}

    def record(res: dict, scores: np.ndarray) -> None:
        res["auc"] = round(float(roc_auc_score(y_test, scores)), 4)
        ref = exact_scores.get(res["n"])
        if ref is not None and res["solver"] != "exact":
            res["auc_exact"] = round(float(roc_auc_score(y_test, ref)), 4)
            res["decision_agreement"] = round(float(np.mean((scores > 0) == (ref > 0))), 4)
        rows.append(res)
        if args.out:
            from safetynet._io import write_json_atomic

            write_json_atomic(args.out, result)

    with tempfile.TemporaryDirectory() as tmp:
        for n in args.exact:
            res, sc = run_child(args.cache, "exact", n, gamma, C, args.components[0], "stratified", args.test,
                                args.seed, Path(tmp))
            exact_scores[n] = sc
            record(res, sc)
        for comps in args.components:
            for landmarks in args.landmarks:
                for n in args.nystroem:
                    if (comps != args.components[0] or landmarks != args.landmarks[0]) and n not in args.sweep_at:
                        continue
                    res, sc = run_child(args.cache, "nystroem", n, gamma, C, comps, landmarks, args.test, args.seed,
                                        Path(tmp))
                    record(res, sc)
    return result


# ------------------------------------------------------------------------------------------- features
def features(args: argparse.Namespace) -> dict:
    """Nyström vs parity random features at equal feature count: kernel error and AUC of a linear SVM."""
    from sklearn.metrics import roc_auc_score
    from sklearn.svm import LinearSVC

    from safetynet.detectors.kernel import squared_distances
    from safetynet.detectors.nystroem import NystroemMap, ParityFeatures, select_landmarks

    probe_int8()
    cache = Path(args.cache)
    X, y = load_train(cache, args.n, args.seed)
    Xt, yt = load_test(cache, args.test, args.seed)
    gamma, C = (args.gamma, args.C) if args.gamma is not None and args.C is not None else choose_params(cache, args.seed)
    # kernel error on (test code, training code) pairs, against the exact kernel
    pa, pb = Xt[:args.pairs], X[:args.pairs]
    K = np.exp(-gamma * squared_distances(pa, pb).astype(np.float64))
    rows = []
    for D in args.dims:
        for kind in ("nystroem", "parity"):
            t0 = time.perf_counter()
            if kind == "nystroem":
                fmap = NystroemMap(X[select_landmarks(X, y, D, "stratified", random_state=args.seed)], gamma)
            else:
                fmap = ParityFeatures(X.shape[1], D, gamma, random_state=args.seed)
            Z, Zt = fmap.transform(X), fmap.transform(Xt)
            map_s = time.perf_counter() - t0
            Ka = fmap.transform(pa) @ fmap.transform(pb).T
            err = np.abs(Ka - K)
            t0 = time.perf_counter()
            lin = LinearSVC(loss="hinge", C=C, random_state=args.seed, max_iter=1000).fit(Z, y)
            auc = roc_auc_score(yt, lin.decision_function(Zt))
            row = {"features": D, "map": kind, "kernel_mean_abs_error": float(err.mean()),
                   "kernel_max_abs_error": float(err.max()), "auc": round(float(auc), 4),
                   "map_seconds": round(map_s, 1), "svm_seconds": round(time.perf_counter() - t0, 1),
                   "svm_epochs": int(lin.n_iter_)}
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    return {"benchmark": "svm_features", "n_train": len(y), "test_codes": len(yt), "gamma": gamma, "C": C,
            "kernel_pairs": int(K.size), "mean_exact_kernel": float(K.mean()), "versions": versions(), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("codes", help="compute and cache the real codes")
    c.add_argument("--data-dir", required=True)
    c.add_argument("--cache", required=True)
    c.add_argument("--chunk", type=int, default=4096)
    c.add_argument("--limit", type=int, default=None, help="images per split (default all)")
    f = sub.add_parser("fit-one", help="(internal) one fit in a fresh process")
    f.add_argument("--cache", required=True)
    f.add_argument("--solver", required=True, choices=["exact", "nystroem"])
    f.add_argument("--n", type=int, required=True)
    f.add_argument("--gamma", type=float, required=True)
    f.add_argument("--C", type=float, required=True)
    f.add_argument("--components", type=int, default=4096)
    f.add_argument("--landmarks", default="stratified")
    f.add_argument("--test", type=int, default=6000)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--scores", required=True)
    sc = sub.add_parser("scale", help="fit time / peak memory / agreement vs N")
    sc.add_argument("--cache", required=True)
    sc.add_argument("--exact", type=int, nargs="*", default=[1000, 2000, 4000, 8000])
    sc.add_argument("--nystroem", type=int, nargs="*", default=[4000, 8000, 16000, 32000, 64000, 92888])
    sc.add_argument("--components", type=int, nargs="+", default=[4096],
                    help="landmark counts; the first is used at every size, the others only at --sweep-at")
    sc.add_argument("--landmarks", nargs="+", default=["stratified"],
                    help="landmark methods; the first at every size, the others only at --sweep-at")
    sc.add_argument("--sweep-at", type=int, nargs="*", default=[8000])
    sc.add_argument("--gamma", type=float, default=None, help="default: CodeSVMDetector CV on 3,000 codes")
    sc.add_argument("--C", type=float, default=None)
    sc.add_argument("--test", type=int, default=6000, help="held-out test codes (half natural, half FGSM)")
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--out", default=None)
    fe = sub.add_parser("features", help="Nyström vs parity random features at equal feature count")
    fe.add_argument("--cache", required=True)
    fe.add_argument("--n", type=int, default=8000)
    fe.add_argument("--dims", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    fe.add_argument("--pairs", type=int, default=1000, help="kernel error on pairs x pairs (test, train) codes")
    fe.add_argument("--gamma", type=float, default=None)
    fe.add_argument("--C", type=float, default=None)
    fe.add_argument("--test", type=int, default=6000)
    fe.add_argument("--seed", type=int, default=0)
    fe.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.cmd == "codes":
        print(json.dumps(make_codes(args), indent=2))
        return 0
    if args.cmd == "fit-one":
        print(json.dumps(fit_one(args)))
        return 0
    result = scale(args) if args.cmd == "scale" else features(args)
    print(json.dumps(result, indent=2))
    if args.out:
        from safetynet._io import write_json_atomic

        write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
