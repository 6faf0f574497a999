"""wild3d: monocular 3D human pose estimation after Habibie et al., CVPR 2019."""

__version__ = "0.1.0"
