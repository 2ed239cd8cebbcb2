"""L2-regularised multinomial logistic regression along a path of penalties: a Newton-CG solver in the span of the
samples, the solver of the linear protocol (`cassle.evaluate.linear`).

Objective for a penalty w over the N fit samples (bias b unpenalised; scikit-learn's `LogisticRegression(C=1/(2w))`):

    F(W, b) = sum_i CE(W x_i + b, y_i) + w ||W||_F^2

Exact reparametrisations make it cheap (the minimiser is the same problem's, mapped back at the end):
- centring: with b free, W x + b = W (x - mean) + b', so the features are centred once;
- the span of the samples: the gradient of the data term lies in the row span of the centred features X, and so
  does the minimiser. One eigendecomposition of the smaller Gram matrix (X X^T when N <= D, else X^T X) gives
  Z = X V, N x r with r = rank(X) <= min(N - 1, D) orthogonal columns, and W = Q V^T with ||W|| = ||Q||; every fit
  of the sweep runs on Z (with N < D: r = N - 1 instead of D columns);
- the class-sum direction: F does not change when a vector is added to every class's weights except through the
  penalty, which makes the class sum of W zero at the optimum; iterates stay on that subspace.

Solver: Newton's method with an interpolating line search (`LogisticProblem._line_search`); each step solves H s = -g
by preconditioned conjugate gradients with Hessian-vector products (two N x r x C products each, no Hessian is
formed), to a relative residual of `forcing` = 0.5 (inexact Newton: each step removes about 1 - forcing^2 of the gap
to the minimum; on the benchmark's shapes of the paper's datasets a loose solve per step costs fewer products in all
than tightening it towards the end: bench/RESULTS.md). The preconditioner is the Hessian's diagonal in a basis where
it is close to diagonal: the features' basis (Z's columns are orthogonal) times the eigenbasis E of the average
softmax covariance S = mean_i (diag(p_i) - p_i p_i^T), i.e. diag_kj = sum_i (e_k^T S_i e_k) z_ij^2 (exact when all p_i
are equal, as at strong penalties). The objective and gradient are accumulated in float64 from the two feature
products (logits, gradient), which run in the working dtype (float32 by default, like the features: Z is stored once);
the CE of a sample is taken relative to its target logit, so that confident samples keep their tiny loss and gradient.
On DTD's shape every fit's objective stayed within 4e-7 of the all-float64 fit's (relative) while the evaluations took
2.3x less time (bench/RESULTS.md). The Hessian-vector products and the CG run in the working dtype: they only shape
the step. A fit stops after the step whose Newton decrement g^T H^-1 g / 2 (an estimate of F - min F before it) is
below `tolerance` x F: that step is taken too, which leaves F - min F near forcing^2 x the decrement (the CG's solve
is the costliest of the fit, so it is never computed only to be thrown away).

Path: penalties are solved from the strongest to the weakest; each fit starts from the previous solution
extrapolated linearly in log(w) through the last two (kept only when it lowers the objective).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["LinearModel", "LogisticProblem", "SolverSettings", "logistic_path"]

PART = 512  # samples per part of a Hessian-vector product on the CPU (`LogisticProblem.parts`)


@dataclass(frozen=True)
class SolverSettings:
    """Newton-CG settings. `tolerance`: stop after a step whose Newton decrement is below tolerance x the objective
    (1e-6 leaves fits within ~2e-6 of the minimum, relative; scikit-learn's lbfgs at its default tol stopped above
    them at every penalty of bench/RESULTS.md). `forcing`: each step's CG stops at a residual of forcing x
    |gradient|."""

    tolerance: float = 1e-6
    forcing: float = 0.5
    max_iter: int = 100
    max_cg: int = 250


@dataclass
class LinearModel:
    """A linear head on un-centred features: outputs = x @ weight.T + bias.

    For classification `classes` holds the label of each output row (the classes present in the fit set);
    `iterations` counts Newton steps and `products` Hessian-vector products of the fit.
    """

    weight: Tensor
    bias: Tensor
    classes: Tensor | None = None
    iterations: int = 0
    products: int = 0

    def outputs(self, x: Tensor) -> Tensor:
        """Logits (classification) or predicted targets (regression), N x outputs."""
        return torch.addmm(self.bias, x.to(self.weight.dtype), self.weight.T)

    def predict(self, x: Tensor) -> Tensor:
        """Predicted labels (classification) or targets (regression)."""
        out = self.outputs(x)
        return out if self.classes is None else self.classes[out.argmax(1)]


@dataclass
class _Trial:
    """An evaluated iterate before its gradient: objective / N at `penalty`, target-relative logits, log-normalisers."""

    q: Tensor
    b: Tensor
    penalty: float
    value: float
    logits: Tensor
    log_norm: Tensor


@dataclass
class _Point:
    """An iterate (float64 Q: C x r, b: C) with its objective / N at `penalty`, gradient and softmax probabilities."""

    q: Tensor
    b: Tensor
    penalty: float
    value: float
    grad_q: Tensor
    grad_b: Tensor
    probs: Tensor

    def at(self, penalty: float, n: int) -> _Point:
        """The same iterate under another penalty: only the penalty term and its gradient change (no data pass)."""
        change = (penalty - self.penalty) / n
        return _Point(self.q, self.b, penalty, self.value + change * float(self.q.square().sum()),
                      self.grad_q + 2 * change * self.q, self.grad_b, self.probs)


Vector = tuple[Tensor, Tensor]


def _dot(u: Vector, v: Vector) -> float:
    return float((u[0] * v[0]).sum(dtype=torch.float64) + (u[1] * v[1]).sum(dtype=torch.float64))


def _class_centred(v: Vector) -> Vector:
    """Project onto the class-sum-zero subspace, where the iterates live."""
    return v[0] - v[0].mean(0), v[1] - v[1].mean()


class LogisticProblem:
    """One fit set in the span of its centred samples (module docstring); `fit` solves one penalty."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.classes, self.target = torch.unique(y, return_inverse=True)
        self.dtype = x.dtype
        n, dim = x.shape
        self.n = n
        self.mean = x.mean(0, dtype=torch.float64)
        centred = x - self.mean.to(x.dtype)
        # Z is stored transposed (zt: r x N) and logits, probabilities and residuals as C x N: both products of a
        # Hessian-vector product run 1.2-1.6x faster in that layout on the shapes of bench/linear.py (BLAS, 1 thread)
        if n > dim:  # rotate onto the eigenvectors of X^T X: an orthogonal change of basis, no rank cut needed
            # (in the working dtype: any V with V^T V = I + E moves the minimum by O(|E|^2) on the original features)
            self.basis = torch.linalg.eigh(centred.T @ centred).eigenvectors
            self.zt = self.basis.T @ centred.T
        else:  # Z = U sqrt(lambda) from X X^T = U lambda U^T; V = X^T U / sqrt(lambda) on the nonzero eigenvalues
            eigenvalues, vectors = torch.linalg.eigh((centred @ centred.T).double())
            keep = eigenvalues > eigenvalues.max() * max(n, dim) * torch.finfo(torch.float64).eps * 16
            root = eigenvalues[keep].sqrt()
            self.zt = (vectors[:, keep] * root).T.contiguous().to(x.dtype)
            self.basis = (centred.T @ vectors[:, keep].to(x.dtype)) / root.to(x.dtype)
        self.zt_square = self.zt.square()  # for the preconditioner, at every Newton step
        self.target_row = self.target[None, :]
        # a Hessian-vector product passes over Z twice; on the CPU, in parts of PART samples, the second pass finds
        # its part still in cache: 1.25x faster from N ~ 6000 samples on (bench/RESULTS.md), no gain below
        self.parts = ([slice(start, start + PART) for start in range(0, n, PART)]
                      if x.device.type == "cpu" and n >= 8 * PART else [slice(None)])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def evaluate(self, q: Tensor, b: Tensor, penalty: float) -> _Point:
        """Objective / N, gradient and probabilities at (q, b) (float64; the two products in the working dtype)."""
        return self._point(self._trial(q, b, penalty))

    def _trial(self, q: Tensor, b: Tensor, penalty: float) -> _Trial:
        """The objective / N at (q, b), with what `_point` needs to complete it (no gradient yet)."""
        logits = torch.mm(q.to(self.dtype), self.zt).double().add_(b[:, None])  # C x N
        logits -= logits.gather(0, self.target_row)  # the target's logit is 0: accurate CE for confident samples
        log_norm = logits.logsumexp(0, keepdim=True)
        value = float(log_norm.sum()) / self.n + penalty / self.n * float(q.square().sum())
        return _Trial(q, b, penalty, value, logits, log_norm)

    def _point(self, trial: _Trial) -> _Point:
        """A trial point with its gradient and softmax probabilities."""
        q, penalty = trial.q, trial.penalty
        probs = (trial.logits - trial.log_norm).exp_()
        probs.scatter_(0, self.target_row, 0.0)
        residual = probs.clone()  # P - Y, with p_y - 1 = -(sum of the other probabilities), exact for small ones
        residual.scatter_(0, self.target_row, -probs.sum(0, keepdim=True))
        probs.scatter_(0, self.target_row, 1 + residual.gather(0, self.target_row))
        grad_q = torch.mm(residual.to(self.dtype), self.zt.T).double().mul_(1 / self.n)
        grad_q.add_(q, alpha=2 * penalty / self.n)
        return _Point(q, trial.b, penalty, trial.value, grad_q, residual.mean(1), probs)

    def hessian_product(self, probs: Tensor, penalty: float, v: Vector) -> Vector:
        """H v at the point with softmax probabilities `probs` (C x N, working dtype), for v = (dQ, db)."""
        out, bias = v[0] * (2 * penalty / self.n), torch.zeros_like(v[1])
        for part in self.parts:
            zt, p = self.zt[:, part], probs[:, part]
            a = torch.addmm(v[1][:, None], v[0], zt)
            a -= a.gather(0, self.target_row[:, part])  # the softmax Jacobian ignores a per-sample shift: precision
            m = p * a
            m -= p * m.sum(0, keepdim=True)
            out.addmm_(m, zt.T, alpha=1 / self.n)
            bias += m.sum(1)
        return out, bias / self.n

    def preconditioner(self, probs: Tensor, penalty: float) -> Callable[[Vector], Vector]:
        """v -> D^-1 v with D the Hessian's diagonal in (softmax-covariance eigenbasis) x (feature basis)."""
        covariance = (torch.diag(probs.sum(1)) - probs @ probs.T) / self.n
        eigenvalues, basis = torch.linalg.eigh(covariance.double())
        basis = basis.to(probs.dtype)
        projected = basis.T @ probs
        variances = basis.square().T @ probs - projected.square()  # e_k^T S_i e_k for every sample i, direction k
        diag_q = torch.addmm(torch.full((), 2 * penalty / self.n, dtype=probs.dtype, device=probs.device),
                             variances, self.zt_square.T, alpha=1 / self.n)
        eigenvalues = eigenvalues.to(probs.dtype)
        inverse_b = torch.where(eigenvalues > eigenvalues.max() * 1e-6, 1 / eigenvalues, 0.0)

        def apply(v: Vector) -> Vector:
            return _class_centred((basis @ ((basis.T @ v[0]) / diag_q), basis @ ((basis.T @ v[1]) * inverse_b)))

        return apply

    def newton_step(self, point: _Point, penalty: float, forcing: float, max_cg: int) -> tuple[Vector, int]:
        """An inexact Newton step: preconditioned CG on H s = -g to |residual| <= forcing |g|; (s, products)."""
        probs = point.probs.to(self.dtype)
        precondition = self.preconditioner(probs, penalty)
        residual = (-point.grad_q.to(self.dtype), -point.grad_b.to(self.dtype))
        target = forcing * math.sqrt(_dot(residual, residual))
        step = (torch.zeros_like(residual[0]), torch.zeros_like(residual[1]))
        z = precondition(residual)
        direction, rz = z, _dot(residual, z)
        for products in range(1, max_cg + 1):
            h = self.hessian_product(probs, penalty, direction)
            curvature = _dot(direction, h)
            if curvature <= 0 or rz <= 0:
                return step, products
            alpha = rz / curvature
            step = (step[0] + alpha * direction[0], step[1] + alpha * direction[1])
            residual = (residual[0] - alpha * h[0], residual[1] - alpha * h[1])
            if math.sqrt(_dot(residual, residual)) <= target:
                return step, products
            z = precondition(residual)
            rz, previous = _dot(residual, z), rz
            direction = (z[0] + rz / previous * direction[0], z[1] + rz / previous * direction[1])
        return step, max_cg

    def fit(self, penalty: float, starts: Sequence[_Point | Vector], settings: SolverSettings
            ) -> tuple[_Point, int, int]:
        """Minimise the objective from the best of `starts` (earlier solutions of this problem, or float64 (Q, b)
        pairs; zero when there are none): (solution, Newton steps, Hessian-vector products)."""
        if not starts:
            starts = [(self.zt.new_zeros(self.num_classes, len(self.zt), dtype=torch.float64),
                       self.zt.new_zeros(self.num_classes, dtype=torch.float64))]
        best = min((start.at(penalty, self.n) if isinstance(start, _Point)
                    else self._trial(*_class_centred(start), penalty) for start in starts), key=lambda p: p.value)
        point = best if isinstance(best, _Point) else self._point(best)
        products = steps = 0
        while steps < settings.max_iter and _dot((point.grad_q, point.grad_b), (point.grad_q, point.grad_b)) > 0:
            step, used = self.newton_step(point, penalty, settings.forcing, settings.max_cg)
            products += used
            step = (step[0].double(), step[1].double())
            decrement = -_dot((point.grad_q, point.grad_b), step)
            found = self._line_search(point, step, decrement, penalty) if decrement > 0 else None
            if found is None:  # no decrease left at float64 precision
                break
            point, steps = found, steps + 1
            if decrement / 2 <= settings.tolerance * found.value:  # converged: this last step is taken, not wasted
                break
        return point, steps, products

    def _line_search(self, point: _Point, step: Vector, decrement: float, penalty: float) -> _Point | None:
        """The point along the Newton step: the full step when it passes the Armijo test and the objective falls by at
        least half the quadratic model's prediction (so near the minimum every step is full); otherwise the
        minimiser of the quadratic through phi(0), phi'(0) = -decrement and phi(t) is tried next (kept within
        [t/10, t/2]), and the lowest trial that passes the Armijo test is taken once a shorter one is no lower or falls
        by enough. Far from the minimum the logistic loss grows much faster along the step than the model says (full
        steps often raise it); the interpolated step lands near the bottom of that drop. None when the step shrinks
        to nothing."""
        t, best = 1.0, None
        while t > 1e-10:
            trial = self._trial(point.q + t * step[0], point.b + t * step[1], penalty)
            drop = point.value - trial.value
            if drop >= 1e-4 * t * decrement and (best is None or trial.value < best.value):
                best = trial
            ratio = drop / (t * decrement / 2)  # 1 at t = 1 for an exact quadratic model
            if best is not None and (best is not trial or ratio >= 0.5):
                return self._point(best)
            t = t / 10 if not ratio > -8 else t / max(2 - ratio, 2)  # (not > : also when the objective is nan)
        return None if best is None else self._point(best)

    def model(self, solution: _Point, iterations: int = 0, products: int = 0) -> LinearModel:
        """The classifier on the original, un-centred features for a solution of this problem."""
        weight = solution.q.to(self.dtype) @ self.basis.T
        return LinearModel(weight, (solution.b - weight.double() @ self.mean).to(self.dtype), self.classes,
                           iterations, products)

    def coordinates(self, model: LinearModel) -> Vector:
        """(Q, b) of this problem for a classifier of the same classes (a warm start from another fit set)."""
        weight = model.weight.double()
        return weight @ self.basis.double(), model.bias.double() + weight @ self.mean


def logistic_path(problem: LogisticProblem, penalties: Sequence[float], settings: SolverSettings,
                  warm_start: bool = True, progress: Callable[[], None] | None = None) -> list[LinearModel]:
    """Fit every penalty (any order), solving from the strongest to the weakest; models in the input order.

    `warm_start`: each fit starts from the better of the previous solution and its extrapolation in log(w) through
    the last two solutions (else from zero).
    """
    order = sorted(range(len(penalties)), key=lambda i: -penalties[i])
    models: dict[int, LinearModel] = {}
    history: list[_Point] = []
    for i in order:
        solution, iterations, products = problem.fit(penalties[i], _starts(history, penalties[i]) if warm_start
                                                     else [], settings)
        history = [*history[-1:], solution]
        models[i] = problem.model(solution, iterations, products)
        if progress is not None:
            progress()
    return [models[i] for i in range(len(penalties))]


def _starts(history: list[_Point], penalty: float) -> list[_Point | Vector]:
    """The last solution and, after two, its extrapolation along the secant of the last two in log(w)."""
    if len(history) < 2 or history[0].penalty == history[1].penalty:
        return list(history[-1:])
    old, last = history
    t = math.log(penalty / last.penalty) / math.log(last.penalty / old.penalty)
    return [last, (last.q + t * (last.q - old.q), last.b + t * (last.b - old.b))]
