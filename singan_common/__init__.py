"""Framework-free core of SinGAN-Dehaze: configs, image IO, data, the randomness plan.

Nothing in this package imports torch or mindspore; both framework packages build on it.
"""

__version__ = "0.1.0"
