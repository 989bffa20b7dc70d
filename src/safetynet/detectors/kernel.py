"""Fast, exact RBF-SVM scoring for integer activation codes.

The detector's score is Eq. (1) of the paper, ``f(c) = sum_i a_i exp(-gamma ||c - c_i||^2) + b``
with ``gamma = 1 / (2 sigma^2)``. For codes (integer levels, see :mod:`safetynet.codes`) the
squared distance is an integer, ``||c||^2 + ||c_i||^2 - 2 c.c_i``, so it can be computed
*exactly* with integer arithmetic. We use an int8 x int8 -> int32 matrix product
(``torch._int_mm``, VNNI on x86), which at one thread was the fastest exact option measured for
the distances alone (10,000 queries x 3,000 support vectors x 1,024-bit codes):

=====================================  =========
int8 GEMM (torch._int_mm), int32 acc     0.40 s
bf16 GEMM in 256-column chunks           0.64 s
float32 GEMM (exact below 2^24)          0.75 s
XOR + np.bitwise_count on uint64 words   1.36 s
=====================================  =========

Distances are integers ``0 .. D (levels-1)^2``, so ``exp(-gamma k)`` comes from a float64 table
(an int32 gather is ~7x cheaper than float64 ``exp`` here, and gives libsvm's kernel values to
rounding); the weighted sum is a float64 matrix-vector product over blocks of queries that stay
in cache. Where ``torch._int_mm`` is missing or codes do not fit in int8 we fall back to a
float32 (exact below 2^24) or float64 product, and to ``exp`` when the table would be too large.
See ``benchmarks/README.md``: 86-122x faster than ``SVC.decision_function``, same decisions.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InputError

_INT8_MAX = 127
_F32_EXACT = 1 << 24
_CHUNK_BYTES = 1 << 23  # (queries x SVs) float64 block of ~8 MB: measured fastest at 4,000 SVs
_LUT_MAX = 1 << 20  # largest exp table (entries) before falling back to exp()


def _dense(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A copy with canonical row-major strides.

    ``torch._int_mm`` on CPU misreads operands whose size-1 dimension has a non-canonical
    stride (e.g. a (1, n) transpose of an (n, 1) array), which ``.contiguous()`` keeps.
    """
    return torch.empty(tuple(t.shape), dtype=dtype).copy_(t)


def _int_mm_available() -> bool:
    fn = getattr(torch, "_int_mm", None)
    if fn is None:
        return False
    try:
        a = torch.ones(2, 3, dtype=torch.int8)
        return bool(torch.equal(fn(a, a.T.contiguous()), torch.full((2, 2), 3, dtype=torch.int32)))
    except (RuntimeError, NotImplementedError):
        return False


def _int_mm_pays() -> bool:
    """Whether ``torch._int_mm`` beats a float32 product on this CPU (best of 3 on a small probe).

    With AVX-512 VNNI the int8 product is several times faster; on AVX2-only CPUs torch's int8
    kernel is ~30x *slower* than float32 (measured on this project's 2-core VM). Both paths are
    exact on codes, so the choice changes speed only, never a score.
    """
    import time

    a = torch.randint(0, 2, (64, 512), dtype=torch.int8)
    b = _dense(torch.randint(0, 2, (512, 64), dtype=torch.int8), torch.int8)
    af, bf = a.float(), b.float()

    def best(fn) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    return best(lambda: torch._int_mm(a, b)) < best(lambda: af @ bf)


_HAS_INT_MM: bool | None = None


def _has_int_mm() -> bool:
    """``torch._int_mm`` exists, is correct, and is faster than float32 here (checked once per process)."""
    global _HAS_INT_MM
    if _HAS_INT_MM is None:
        _HAS_INT_MM = _int_mm_available() and _int_mm_pays()
    return _HAS_INT_MM


class CodeRBFKernel:
    """Support vectors prepared once for repeated exact scoring of integer codes.

    Parameters
    ----------
    support_vectors : ndarray (n_SV, D) of integers in [0, 255]
    dual_coef : ndarray (n_SV,) or (1, n_SV), the signed ``alpha_i y_i``
    intercept : float
    gamma : float, ``1 / (2 sigma^2)``
    chunk_size : int or None, queries per block; None picks ~2 MB blocks.
    """

    def __init__(self, support_vectors: np.ndarray, dual_coef: np.ndarray, intercept: float, gamma: float,
                 chunk_size: int | None = None) -> None:
        sv = np.asarray(support_vectors)
        if sv.ndim != 2 or not (np.issubdtype(sv.dtype, np.integer) or sv.dtype == bool):
            raise InputError(f"support_vectors must be an integer array (n_SV, D), got {sv.dtype} {sv.shape}")
        alpha = np.asarray(dual_coef, dtype=np.float64).reshape(-1)
        if alpha.shape[0] != sv.shape[0]:
            raise InputError(f"dual_coef has {alpha.shape[0]} entries for {sv.shape[0]} support vectors")
        if not (gamma > 0 and math.isfinite(gamma)):
            raise InputError(f"gamma must be a positive finite number, got {gamma!r}")
        sv_max = int(sv.max()) if sv.size else 0
        if sv.size and (int(sv.min()) < 0 or sv_max > 255):
            raise InputError("support vector codes must lie in [0, 255]")
        self.n_features = sv.shape[1]
        self.gamma = float(gamma)
        self.intercept = float(intercept)
        self.chunk_size = chunk_size
        self._sv_max = sv_max
        sv64 = sv.astype(np.int64)
        self._sv_norm = torch.from_numpy((sv64 * sv64).sum(1))  # (n_SV,) int64
        self._alpha = torch.from_numpy(alpha.copy())
        self._sv = sv.astype(np.uint8)
        self._sv_prepared: dict[str, torch.Tensor] = {}
        self._lut: torch.Tensor | None = None

    def _table(self, x_max: int) -> torch.Tensor | None:
        """``exp(-gamma k)`` for every possible squared distance ``k``, or None if too many."""
        top = max(x_max, self._sv_max)
        size = self.n_features * top * top + 1
        if size > _LUT_MAX:
            return None
        if self._lut is None or len(self._lut) < size:
            self._lut = torch.arange(size, dtype=torch.float64).mul_(-self.gamma).exp_()
        return self._lut

    def _block(self, n_sv: int) -> int:
        if self.chunk_size is not None:
            return max(1, int(self.chunk_size))
        return int(min(1024, max(64, _CHUNK_BYTES // (8 * max(n_sv, 1)))))

    def _mode(self, x_max: int) -> str:
        top = max(x_max, self._sv_max)
        if top <= _INT8_MAX and self.n_features * _INT8_MAX ** 2 < 2 ** 31 and _has_int_mm():
            return "int8"
        if self.n_features * top * top < _F32_EXACT:
            return "float32"
        return "float64"

    def _prepared_sv(self, mode: str) -> torch.Tensor:
        t = self._sv_prepared.get(mode)
        if t is None:
            dtype = {"int8": torch.int8, "float32": torch.float32, "float64": torch.float64}[mode]
            t = _dense(torch.from_numpy(self._sv).T, dtype)  # (D, n_SV)
            self._sv_prepared[mode] = t
        return t

    _DTYPES = {"int8": (torch.int8, torch.int32), "float32": (torch.float32, torch.float32),
               "float64": (torch.float64, torch.float64)}

    def _distances_block(self, xq: np.ndarray, mode: str) -> torch.Tensor:
        """``||x||^2 + ||c||^2 - 2 x.c`` for a block of queries; exact (int32, or float below 2^24/2^53)."""
        in_dtype, acc_dtype = self._DTYPES[mode]
        svt = self._prepared_sv(mode)
        x = torch.from_numpy(xq)
        if mode == "int8":
            d = torch._int_mm(_dense(x, torch.int8), svt)  # (m, n_SV) int32
        else:
            d = x.to(in_dtype).matmul(svt)
        xn = (x.to(acc_dtype) ** 2).sum(1, keepdim=True) if mode != "int8" else \
            (x.to(torch.int32) ** 2).sum(1, keepdim=True, dtype=torch.int32)
        return d.mul_(-2).add_(self._sv_norm.to(acc_dtype)).add_(xn)

    def squared_distances(self, X: np.ndarray) -> np.ndarray:
        """Exact ``||x - c_i||^2`` of shape (N, n_SV), int64."""
        X = self._check(X)
        mode = self._mode(int(X.max()) if X.size else 0)
        out = np.empty((X.shape[0], self._sv.shape[0]), dtype=np.int64)
        step = self._block(self._sv.shape[0])
        for i in range(0, X.shape[0], step):
            out[i:i + step] = self._distances_block(X[i:i + step], mode).to(torch.int64).numpy()
        return out

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """``sum_i a_i exp(-gamma ||x - c_i||^2) + b`` for every row of ``X``; float64 (N,)."""
        X = self._check(X)
        n = X.shape[0]
        out = np.empty(n, dtype=np.float64)
        if n == 0:
            return out
        x_max = int(X.max())
        mode = self._mode(x_max)
        lut = self._table(x_max)
        step = self._block(self._sv.shape[0])
        for i in range(0, n, step):
            dist = self._distances_block(X[i:i + step], mode)  # (m, n_SV), exact integers
            if lut is not None:  # distances are small integers: look exp up instead of computing it
                idx = dist if dist.dtype == torch.int32 else dist.to(torch.int64)
                k = lut.index_select(0, idx.reshape(-1)).reshape(dist.shape)
            else:
                k = dist.to(torch.float64).mul_(-self.gamma).exp_()
            out[i:i + step] = torch.mv(k, self._alpha).add_(self.intercept).numpy()
        return out

    def _check(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InputError(f"codes must have shape (N, {self.n_features}), got {X.shape}")
        if not (np.issubdtype(X.dtype, np.integer) or X.dtype == bool):
            raise InputError(f"codes must be an integer array, got {X.dtype}")
        if X.size and (int(X.min()) < 0 or int(X.max()) > 255):
            raise InputError("codes must lie in [0, 255]")
        return np.ascontiguousarray(X, dtype=np.uint8)


def squared_distances(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Exact integer squared Euclidean distances between code rows of ``X`` (N, D) and ``Y`` (M, D)."""
    Y = np.asarray(Y)
    return CodeRBFKernel(Y, np.zeros(Y.shape[0]), 0.0, 1.0).squared_distances(X)


def rbf_decision_function(X: np.ndarray, support_vectors: np.ndarray, dual_coef: np.ndarray, intercept: float,
                          gamma: float) -> np.ndarray:
    """One-shot :meth:`CodeRBFKernel.decision_function` (prepare a kernel to score repeatedly)."""
    return CodeRBFKernel(support_vectors, dual_coef, intercept, gamma).decision_function(X)


__all__ = ["CodeRBFKernel", "rbf_decision_function", "squared_distances"]
