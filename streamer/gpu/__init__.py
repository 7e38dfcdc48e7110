"""GPU-resident frames: the device's primary context, NV12 → BGR + resize on the device, decoded-frame pools.

Below the sources and the executors (both use it): it imports pycuda lazily and nothing of the pipeline.
"""
