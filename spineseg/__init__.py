"""SpineSeg: spine segmentation in thick-slice sagittal MR.

The core package: image I/O and geometry, preprocessing, networks, inference,
training and the ``spineseg`` command line. It never imports Slicer.
"""
__version__ = "0.1.0"
