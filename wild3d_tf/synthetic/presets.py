"""Sizes of the synthetic datasets: ``tiny`` (tests, demo), ``small``, ``bench`` (the ablation)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Preset:
  name: str
  # Human3.6M: subjects, actions, sub-actions per action, frames per take (50 Hz).
  h36m_subjects: tuple = ("S1", "S9")
  h36m_actions: tuple = ("Directions", "Walking")
  h36m_subactions: int = 1
  h36m_frames: int = 10
  # MPI-INF-3DHP training set: (subject, sequence) pairs, frames per sequence (25 Hz),
  # cameras that get videos (all 14 get annotations), image scale (1 = 2048 px).
  dhp_sequences: tuple = (("S1", 1),)
  dhp_frames: int = 8
  dhp_video_cameras: tuple = (0, 2)
  dhp_scale: float = 0.25
  # MPI-INF-3DHP test set: takes per sequence TS1..TS6 (a take: one person, clothes, background,
  # camera placement and activity), frames per take (at least 2: one is invalid), image scale.
  dhp_test_takes: tuple = (2, 2, 2, 2, 2, 2)
  dhp_test_take_frames: int = 3
  dhp_test_scale: float = 0.25
  # In-the-wild 2D sets: number of images; MPII frame scale (1 = 1280x720).
  mpii_images: int = 6
  mpii_scale: float = 0.5
  lsp_images: int = 8
  lspet_images: int = 8


PRESETS = {
  "tiny": Preset("tiny"),
  "small": Preset(
    "small",
    h36m_subjects=("S1", "S5", "S6", "S7", "S8", "S9", "S11"),
    h36m_actions=("Directions", "Eating", "Greeting", "Sitting", "Walking", "Photo"),
    h36m_subactions=2,
    h36m_frames=50,
    dhp_sequences=(("S1", 1), ("S1", 2), ("S2", 1), ("S2", 2)),
    dhp_frames=60,
    dhp_video_cameras=(0, 1, 2, 4, 5, 6, 7, 8),
    dhp_scale=0.5,
    dhp_test_takes=(5, 5, 5, 5, 10, 10),
    dhp_test_take_frames=10,
    dhp_test_scale=0.5,
    mpii_images=200,
    lsp_images=200,
    lspet_images=200,
  ),
  # Sized so that generation, conversion and the whole ablation (3 seeds x 5 variants of the
  # tiny network) fit in about two hours on 2 CPU cores; 3D samples come from 13 studio
  # subjects-sequences, 2D samples from 4,500 in-the-wild images.
  "bench": Preset(
    "bench",
    h36m_subjects=("S1", "S5", "S6", "S7", "S8", "S9", "S11"),
    h36m_actions=("Directions", "Eating", "Greeting", "Sitting", "Walking", "Photo"),
    h36m_subactions=2,
    h36m_frames=30,
    dhp_sequences=tuple((f"S{s}", 1) for s in range(1, 9)),
    dhp_frames=120,
    dhp_video_cameras=(0, 2, 4, 8),
    dhp_scale=0.5,
    # At least 50 takes per test column (studio TS1-4, wild TS5, wild TS6): intervals over takes.
    dhp_test_takes=(13, 13, 13, 13, 50, 50),
    dhp_test_take_frames=8,
    dhp_test_scale=0.5,
    mpii_images=1500,
    lsp_images=1000,
    lspet_images=2000,
  ),
}
