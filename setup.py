"""wild3d: monocular 3D human pose estimation (Habibie et al., CVPR 2019) in TF/Keras."""

import setuptools

setuptools.setup(
  name="wild3d",
  version="0.1.0",
  description="In-the-wild 3D human pose estimation with explicit 2D features (TF/Keras, Beam).",
  long_description=open("README.md", encoding="utf-8").read(),
  long_description_content_type="text/markdown",
  python_requires=">=3.10,<3.13",
  packages=setuptools.find_packages(
    include=["wild3d_tf", "wild3d_tf.*", "beam_preprocess", "beam_preprocess.*"]
  ),
  package_data={
    "wild3d_tf.synthetic": ["data/*.bvh", "data/README.md"],
    "wild3d_tf": ["demo_data/*.png", "demo_data/README.md"],
  },
  # Ranges tested together on Python 3.11 (see README, "Dependencies").
  install_requires=[
    "tensorflow>=2.21,<2.22",
    "keras>=3.15,<4",
    "tensorboard>=2.21,<2.22",
    "tensorflow-datasets>=4.9.10,<5",
    "apache-beam>=2.77,<3",
    # Beam's TFRecord sink needs a CRC32C implementation at run time.
    "google-crc32c>=1.5,<2",
    "numpy>=1.26,<3",
    "scipy>=1.13,<2",
    "h5py>=3.10,<4",
    "cdflib>=1.3,<2",
    "opencv-python-headless>=4.9,<6",
    "matplotlib>=3.8,<4",
    "absl-py>=2.1,<3",
    "tqdm>=4.66,<5",
    # Warm-up requests at export and the gRPC client (PredictionLog, PredictRequest protos).
    "tensorflow-serving-api>=2.21,<2.22",
    "grpcio>=1.60,<2",
  ],
  extras_require={
    "test": [
      # pytest 9.2 stores node ids structured, and xdist 3.8's --dist loadgroup (make test) still
      # renames the old field: every xdist_group splits over the workers and their module
      # fixtures are built once per worker, minutes per CI run (pytest-dev/pytest-xdist#1386,
      # open; tests/test_harness.py notices it).
      "pytest>=8,<9.2",
      "pytest-xdist>=3.5,<4",
      "ruff>=0.15,<0.18",
      # The gs:// conversion test (tests/test_cloud_storage.py): Beam's GCS filesystem needs only
      # the storage client; the emulator serves it on loopback.
      "google-cloud-storage>=3.17,<4",
      "gcp-storage-emulator>=2026.7.19,<2027",
    ],
    # Dataflow and gs:// (`pip install wild3d[gcp]`): Beam's GCP I/O, auth and DataflowRunner.
    "gcp": ["apache-beam[gcp]>=2.77,<3"],
  },
)
