"""Error limits for singan_ms vs singan_torch on CPU, fp32 (DESIGN.md section 6), in one place.

Errors are max |ms - torch| divided by max(1, max |torch|): fp32 rounding scales with the values, and
randomly weighted layers produce outputs up to ~1e2. Each limit is a few times the value measured on this
machine (noted beside it): fp32 reductions and oneDNN
kernels sum in different orders in the two frameworks, nothing more. A measured error growing past these
means a layer no longer computes the same function: find the cause, do not raise the number.
"""

# A single layer (conv, transposed conv, pad, norm, blur, tanh, dense), forward and input gradient: measured
# <= 1.0e-6 (conv k7 with outputs up to 8.5: 7.6e-6 absolute).
LAYER_ATOL = 3e-6
# Whole networks at small size, weights copied: measured G 1.4e-7 (ngf 8), encoder features <= 1.8e-6
# (resblock outputs up to ~5: 8.8e-6 absolute), D 4e-7, F 6e-8, VGG16 features to relu3_3 2e-7.
NET_ATOL = 5e-6
VGG_RTOL = 2e-6
# Losses with identical draws (values O(1..10)): measured PatchNCE 5e-7, MMD 1e-7, perceptual 6e-8,
# the generator's total 1e-6.
LOSS_ATOL = 5e-6
# Gradients of the generator loss w.r.t. G's parameters, relative to the largest gradient of that parameter:
# measured <= 2e-5 (ill-conditioned through instance norm of near-constant maps at init; torch's own fp32 vs
# fp64 gradient differs by the same amount). Conv biases right before an affine-free instance norm are
# structural zeros (DESIGN.md section 5): their gradient is float noise (measured 1.2e-3 absolute next to a
# weight gradient of 3e2, i.e. 4e-6 of it), bounded relative to the same layer's weight gradient.
GRAD_RTOL = 1e-4
STRUCTURAL_ZERO_GRAD_RTOL = 2e-5
# Adam: moments bit-equal; parameters within 1 ulp: torch's vectorised CPU sqrt is not correctly rounded (it
# differs from IEEE sqrt in ~17% of elements by 1 ulp), which moves the update's last bit.
ADAM_PARAM_ULPS = 1
