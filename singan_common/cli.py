"""Command-line pieces shared by `python -m singan_torch` and `python -m singan_ms`.

Both CLIs take the same flags for the same config fields; the namespace is turned into the config
dataclasses here, at the edge, so no constructor ever sees an argparse namespace.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from singan_common.config import ConfigError, ModelConfig, TrainConfig

# Errors a user can cause with their input; reported in one line without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError)


def add_model_args(p: argparse.ArgumentParser) -> None:
    d = ModelConfig()
    g = p.add_argument_group("model")
    g.add_argument("--variant", choices=("stride2", "antialias"), default=d.variant,
                   help="stride2: strided conv + transposed conv (the paper); antialias: CUT's blur down/up")
    g.add_argument("--ngf", type=int, default=d.ngf)
    g.add_argument("--ndf", type=int, default=d.ndf)
    g.add_argument("--n-blocks", type=int, default=d.n_blocks)
    g.add_argument("--norm", choices=("instance", "batch", "none"), default=d.norm)
    g.add_argument("--bn-momentum", type=float, default=d.bn_momentum, help="PyTorch convention")
    g.add_argument("--init-gain", type=float, default=d.init_gain,
                   help="std of the normal initial weights (CUT's init_gain)")
    g.add_argument("--num-patches", type=int, default=d.num_patches)
    g.add_argument("--nce-t", type=float, default=d.nce_T)
    g.add_argument("--neg-perturb", choices=("uniform", "gaussian", "none"), default=d.neg_perturb)
    g.add_argument("--neg-perturb-strength", type=float, default=d.neg_perturb_strength)
    g.add_argument("--mmd-num-samples", type=int, default=d.mmd_num_samples)
    for name in ("GAN", "NCE", "perceptual", "MMD"):
        g.add_argument(f"--lambda-{name.lower()}", type=float, default=getattr(d, f"lambda_{name}"))


def add_train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("training")
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--beta1", type=float, default=d.beta1)
    g.add_argument("--beta2", type=float, default=d.beta2)
    g.add_argument("--n-epochs", type=int, default=d.n_epochs, help="epochs at the initial learning rate")
    g.add_argument("--n-epochs-decay", type=int, default=d.n_epochs_decay, help="epochs of linear decay to 0")
    g.add_argument("--load-size", type=int, default=d.load_size)
    g.add_argument("--crop-size", type=int, default=d.crop_size)
    g.add_argument("--no-flip", action="store_true")
    g.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="images per process; a data-parallel run's global batch is this x the number of processes")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--save-epoch-freq", type=int, default=d.save_epoch_freq)
    g.add_argument("--max-steps", type=int, default=d.max_steps, help="stop after this many iterations (0: none)")


def model_config_from_args(a: argparse.Namespace) -> ModelConfig:
    return ModelConfig(variant=a.variant, ngf=a.ngf, ndf=a.ndf, n_blocks=a.n_blocks, norm=a.norm,
                       bn_momentum=a.bn_momentum, init_gain=a.init_gain, num_patches=a.num_patches, nce_T=a.nce_t,
                       neg_perturb=a.neg_perturb, neg_perturb_strength=a.neg_perturb_strength,
                       mmd_num_samples=a.mmd_num_samples, lambda_GAN=a.lambda_gan, lambda_NCE=a.lambda_nce,
                       lambda_perceptual=a.lambda_perceptual, lambda_MMD=a.lambda_mmd)


def train_config_from_args(a: argparse.Namespace) -> TrainConfig:
    return TrainConfig(lr=a.lr, beta1=a.beta1, beta2=a.beta2, n_epochs=a.n_epochs, n_epochs_decay=a.n_epochs_decay,
                       load_size=a.load_size, crop_size=a.crop_size, flip=not a.no_flip, batch_size=a.batch_size,
                       seed=a.seed, save_epoch_freq=a.save_epoch_freq, max_steps=a.max_steps)


def run_command(fn: Callable[[], int], prog: str) -> int:
    """Run a CLI body, turning user-caused errors into one line on stderr and exit status 2."""
    try:
        return fn()
    except ConfigError as exc:
        print(f"{prog}: config error: {exc}", file=sys.stderr)
    except USER_ERRORS as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the last saved state is intact (resume with --resume)", file=sys.stderr)
        return 130
    return 2
