"""A MindSpore Adam whose update is torch.optim.Adam's (single-tensor path, no weight decay), operation by
operation, usable inside a graph-mode (jit) training step.

Why not MindSpore's: nn.Adam adds eps before the bias correction (differs 7e-5 from torch after one step), and
mint.optim.Adam silently does nothing in PyNative mode. Here the state is explicit Parameters (exp_avg,
exp_avg_sq, step) written with ops.assign, so it works and is checkpointable in both modes.

torch's arithmetic, reproduced: the bias corrections and the step size are computed in float64 from the float
step count and only then rounded to float32 (torch computes them as Python floats); exp_avg uses lerp, whose
formula depends on whether the weight is below 0.5; addcmul / addcdiv multiply by the scalar first.

On CPU the per-element update runs in singan_ms.native's compiled `AdamStep` kernel (the same arithmetic, one
pass, 3x faster; bit-identical to the MindSpore-operator route below, which remains the GPU / Ascend path).
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from singan_ms import native


class Adam(nn.Cell):
    """Adam over `params` (a list of Parameters); `construct(grads)` applies one step and returns True."""

    def __init__(self, params: list[Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, name: str = "adam") -> None:
        # auto_prefix off (as MindSpore's own optimizers): holding the network's Parameters must not rename them.
        super().__init__(auto_prefix=False)
        self.parameters = ParameterTuple(params)
        self.exp_avg = self.parameters.clone(prefix=f"{name}.exp_avg", init="zeros")
        self.exp_avg_sq = self.parameters.clone(prefix=f"{name}.exp_avg_sq", init="zeros")
        # torch keeps `step` as a float32 tensor; so do we (exact for any realistic step count).
        self.step = Parameter(Tensor(np.float32(0.0)), name=f"{name}.step", requires_grad=False)
        # float64 so that lr / bias_correction1 rounds exactly as torch's Python-float arithmetic.
        self.lr = Parameter(Tensor(np.float64(lr)), name=f"{name}.lr", requires_grad=False)
        beta1, beta2 = betas
        self.beta1_64, self.beta2_64 = Tensor(np.float64(beta1)), Tensor(np.float64(beta2))
        # Python floats holding float32 values: MindSpore casts scalars to the tensor's dtype, exactly here.
        self.lerp_weight = _f32(1.0 - beta1)
        self.lerp_small = abs(self.lerp_weight) < 0.5
        # torch.lerp(m, g, w) = m + w (g - m) for |w| < 0.5, else g + (w - 1)(g - m)
        self.lerp_coeff = self.lerp_weight if self.lerp_small else _f32(self.lerp_weight - 1.0)
        self.beta2_32 = _f32(beta2)
        self.one_minus_beta2 = _f32(1.0 - beta2)
        self.eps = _f32(eps)
        self.n = len(params)
        self.use_kernel = native.library() is not None
        if self.use_kernel:
            self.kernel = native.custom("AdamStep", out_shape=lambda p, g, m, v, s: (p, p, p),
                                        out_dtype=lambda p, g, m, v, s: (p, p, p))
            # The kernel's scalar operands in its order; the last two change every step.
            self.kernel_consts = Tensor(np.array([self.lerp_coeff, float(self.lerp_small), self.beta2_32,
                                                  self.one_minus_beta2, self.eps], np.float32))

    def set_lr(self, lr: float) -> None:
        self.lr.set_data(Tensor(np.float64(lr)))

    def construct(self, grads: tuple[Tensor, ...]) -> Tensor:
        return self.apply(self.updates(grads))

    def updates(self, grads: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor, ...],
                                                          tuple[Tensor, ...]]:
        """One step's new (step, parameters, exp_avg, exp_avg_sq), computed without writing anything: the train
        step runs the G step against D's new weights before it writes them (singan_ms.model.TrainStep)."""
        step = self.step + 1.0
        s64 = step.astype(ms.float64)
        bias_correction1 = 1.0 - ops.pow(self.beta1_64, s64)
        bias_correction2 = 1.0 - ops.pow(self.beta2_64, s64)
        neg_step_size = (-(self.lr / bias_correction1)).astype(ms.float32)
        bias_correction2_sqrt = ops.sqrt(bias_correction2).astype(ms.float32)
        params, exp_avgs, exp_avg_sqs = (), (), ()
        if self.use_kernel:
            scalars = ops.concat((self.kernel_consts, neg_step_size.reshape(1), bias_correction2_sqrt.reshape(1)))
            for i in range(self.n):
                # value(): ordered reads (native.custom); a bare Parameter would be the live buffer.
                p_new, m_new, v_new = self.kernel(self.parameters[i].value(), grads[i], self.exp_avg[i].value(),
                                                  self.exp_avg_sq[i].value(), scalars)
                params, exp_avgs, exp_avg_sqs = params + (p_new,), exp_avgs + (m_new,), exp_avg_sqs + (v_new,)
            return step, params, exp_avgs, exp_avg_sqs
        for i in range(self.n):
            g, p, m, v = grads[i], self.parameters[i], self.exp_avg[i], self.exp_avg_sq[i]
            # torch's vectorised CPU kernels fuse multiply-adds: lerp is fmadd(coeff, g - m, base) and addcmul is
            # fmadd(s * g, g, v * beta2). MindSpore has no fma; a float64 multiply-add of float32 operands is exact
            # before the final rounding (24-bit x 24-bit products fit in 53 bits), which reproduces it.
            m_new = _fma(self.lerp_coeff, g - m, m if self.lerp_small else g)
            v_new = _fma(self.one_minus_beta2 * g, g, v * self.beta2_32)
            denom = ops.sqrt(v_new) / bias_correction2_sqrt + self.eps
            params += (p + neg_step_size * m_new / denom,)
            exp_avgs, exp_avg_sqs = exp_avgs + (m_new,), exp_avg_sqs + (v_new,)
        return step, params, exp_avgs, exp_avg_sqs

    def apply(self, updates: tuple[Tensor, tuple[Tensor, ...], tuple[Tensor, ...], tuple[Tensor, ...]]) -> Tensor:
        """Write what `updates` computed; returns True once written (for ops.depend)."""
        step, params, exp_avgs, exp_avg_sqs = updates
        done = ops.depend(True, ops.assign(self.step, step))
        for i in range(self.n):
            done = ops.depend(done, ops.assign(self.exp_avg[i], exp_avgs[i]))
            done = ops.depend(done, ops.assign(self.exp_avg_sq[i], exp_avg_sqs[i]))
            done = ops.depend(done, ops.assign(self.parameters[i], params[i]))
        return done


def _f32(x: float) -> float:
    """x rounded to float32, as torch rounds a Python scalar entering a float32 kernel."""
    return float(np.float32(x))


def _fma(a: Tensor | float, b: Tensor, c: Tensor) -> Tensor:
    """a * b + c rounded once to float32 (a, b, c float32 values)."""
    if isinstance(a, float):
        return (c.astype(ms.float64) + a * b.astype(ms.float64)).astype(ms.float32)
    return (c.astype(ms.float64) + a.astype(ms.float64) * b.astype(ms.float64)).astype(ms.float32)
