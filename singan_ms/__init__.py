"""SinGAN-Dehaze in MindSpore: the same files, classes and attribute names as singan_torch.

This package never imports torch (tests run it where `import torch` raises). Call `singan_ms.device.setup()`
before building networks: it picks the device and graph/PyNative mode and applies the CPU fixes in one place.
"""
