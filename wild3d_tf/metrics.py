"""3D pose metrics in NumPy: the numbers every wild3d table reports.

All functions take ``pred, gt`` shaped (N, J, 3), in mm, root-relative, and
return one value per pose. Definitions (``docs/metrics.md`` has the sources):

* ``mpjpe``: mean over joints of the Euclidean error.
* ``n_mpjpe``: MPJPE after scaling the prediction by the least-squares scale
  ``<P_hat, P> / <P_hat, P_hat>`` (the "globally scaled" protocol; the paper
  does not define it, this is VideoPose3D's and MMPose's choice). The
  alternatives, the ratio of Frobenius norms and of total bone length, are
  ``scale_method="norm"`` and ``"bones"`` of :func:`align`.
* ``pa_mpjpe``: MPJPE after the similarity Procrustes alignment.
* ``pck3d``: percentage of joints whose error is strictly below 150 mm.
* ``auc3d``: mean of the PCK over thresholds 0, 5, ..., 150 mm (31 values).

A protocol (``unscaled``, ``scaled``, ``procrustes``) selects the alignment;
:class:`Report` holds per-joint errors under all three and renders the
paper's tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import json

import numpy as np

from wild3d_tf import geometry, skeletons

PROTOCOLS = ("unscaled", "scaled", "procrustes")
PCK_THRESHOLD_MM = 150.0
AUC_THRESHOLDS_MM = np.arange(0.0, 151.0, 5.0)

# MPI-INF-3DHP test sequences by scene (README of the test set; paper Sec. 4.1).
SCENES_3DHP = {"GS": ("TS1", "TS2"), "NoGS": ("TS3", "TS4"), "Outdoor": ("TS5", "TS6")}


def _check(pred, gt):
  pred = np.asarray(pred, dtype=np.float64)
  gt = np.asarray(gt, dtype=np.float64)
  if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
    raise ValueError(f"pred and gt must both be (N, J, 3); got {pred.shape} and {gt.shape}")
  return pred, gt


def align(
  pred: np.ndarray,
  gt: np.ndarray,
  protocol: str,
  scale_method: str = "lstsq",
  joint_set: skeletons.JointSet = skeletons.POSE3D,
) -> np.ndarray:
  """Aligns each predicted pose to its ground truth under ``protocol``.

  Args:
    pred, gt: (N, J, 3).
    protocol: ``unscaled`` (as is), ``scaled`` (one scale per pose) or
      ``procrustes`` (scale, rotation and translation per pose).
    scale_method: for ``scaled``: ``lstsq`` (default), ``norm`` (ratio of
      Frobenius norms) or ``bones`` (ratio of total bone length of
      ``joint_set``).
  """
  pred, gt = _check(pred, gt)
  if protocol == "unscaled":
    return pred
  if protocol == "procrustes":
    return geometry.procrustes(pred, gt)[0]
  if protocol != "scaled":
    raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
  if scale_method == "lstsq":
    return geometry.scale_align(pred, gt)
  if scale_method == "norm":
    num, den = np.linalg.norm(gt, axis=(1, 2)), np.linalg.norm(pred, axis=(1, 2))
  elif scale_method == "bones":
    child, parent = np.array(joint_set.bones).T
    num = np.linalg.norm(gt[:, child] - gt[:, parent], axis=-1).sum(-1)
    den = np.linalg.norm(pred[:, child] - pred[:, parent], axis=-1).sum(-1)
  else:
    raise ValueError(f"unknown scale_method {scale_method!r}; expected lstsq, norm or bones")
  return pred * np.divide(num, den, out=np.zeros_like(num), where=den > 0)[:, None, None]


def joint_errors(
  pred: np.ndarray, gt: np.ndarray, protocol: str = "unscaled", **align_kwargs
) -> np.ndarray:
  """(N, J) Euclidean error per joint after aligning under ``protocol``."""
  pred, gt = _check(pred, gt)
  return np.linalg.norm(align(pred, gt, protocol, **align_kwargs) - gt, axis=-1)


def _select(errors, joints):
  return errors if joints is None else errors[:, list(joints)]


def pck_from_errors(errors: np.ndarray, threshold: float = PCK_THRESHOLD_MM) -> np.ndarray:
  """(N,) percentage of joints with error strictly below ``threshold``."""
  return 100.0 * np.mean(errors < threshold, axis=-1)


def auc_from_errors(
  errors: np.ndarray, thresholds: Sequence[float] = AUC_THRESHOLDS_MM
) -> np.ndarray:
  """(N,) mean PCK over ``thresholds`` (a percentage)."""
  thresholds = np.asarray(thresholds, dtype=np.float64)
  return 100.0 * np.mean(errors[..., None] < thresholds, axis=(-1, -2))


def mpjpe(pred, gt, joints=None) -> np.ndarray:
  """(N,) mean per-joint position error in mm, no alignment."""
  return _select(joint_errors(pred, gt, "unscaled"), joints).mean(axis=-1)


def n_mpjpe(pred, gt, joints=None) -> np.ndarray:
  """(N,) MPJPE after the least-squares scale alignment of each pose."""
  return _select(joint_errors(pred, gt, "scaled"), joints).mean(axis=-1)


def pa_mpjpe(pred, gt, joints=None) -> np.ndarray:
  """(N,) MPJPE after similarity Procrustes alignment of each pose."""
  return _select(joint_errors(pred, gt, "procrustes"), joints).mean(axis=-1)


def pck3d(
  pred, gt, threshold: float = PCK_THRESHOLD_MM, protocol: str = "unscaled", joints=None
) -> np.ndarray:
  """(N,) 3D PCK in percent: share of joints with error < ``threshold`` mm."""
  return pck_from_errors(_select(joint_errors(pred, gt, protocol), joints), threshold)


def auc3d(
  pred, gt, thresholds=AUC_THRESHOLDS_MM, protocol: str = "unscaled", joints=None
) -> np.ndarray:
  """(N,) area under the PCK curve over ``thresholds``, in percent."""
  return auc_from_errors(_select(joint_errors(pred, gt, protocol), joints), thresholds)


def pck_curve(errors: np.ndarray, thresholds=AUC_THRESHOLDS_MM) -> np.ndarray:
  """PCK (percent) at each threshold, pooled over all given (frame, joint) errors."""
  errors = np.asarray(errors, dtype=np.float64).reshape(-1)
  return 100.0 * np.mean(errors[:, None] < np.asarray(thresholds)[None], axis=0)


def scene_subsets_3dhp(sequences: Sequence[str]) -> dict[str, np.ndarray]:
  """Masks for the paper's 3DHP columns GS / NoGS / Outdoor / All."""
  sequences = np.asarray(sequences)
  subsets = {scene: np.isin(sequences, names) for scene, names in SCENES_3DHP.items()}
  subsets["All"] = np.ones(len(sequences), dtype=bool)
  return subsets


@dataclasses.dataclass
class Report:
  """Per-joint errors of one evaluation under the three protocols.

  Pooling is over (frame, joint) pairs, so a subset's score weights its
  sequences by their number of (valid) frames, as the 3DHP protocol asks.

  Attributes:
    errors: protocol -> (N, J) errors in mm.
    joint_names: the J joint names.
    pck_joints: names of the joints that PCK and AUC count (a 3DHP group variant).
    joint_groups: group name -> joint names, for the per-group table.
    labels: label name (e.g. ``sequence``, ``activity``, ``action``) -> (N,) values.
    subsets: column name -> (N,) bool mask, for the headline table.
    average_over: a label whose per-value scores are also averaged with equal weight per
      value (``mean_over``; H3.6M: ``action``, the average peers' tables give), beside the
      subsets' scores pooled over frames; None for none.
  """

  errors: Mapping[str, np.ndarray]
  joint_names: tuple[str, ...]
  pck_joints: tuple[str, ...]
  joint_groups: Mapping[str, tuple[str, ...]]
  labels: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  subsets: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  average_over: str | None = None

  @classmethod
  def from_poses(
    cls,
    pred,
    gt,
    *,
    labels=None,
    subsets=None,
    joint_group_variant: str = "A",
    joint_set: skeletons.JointSet = skeletons.POSE3D,
    scale_method: str = "lstsq",
    average_over: str | None = None,
  ) -> Report:
    pred, gt = _check(pred, gt)
    groups = skeletons.JOINT_GROUPS_3DHP[joint_group_variant]
    n = len(pred)
    labels = {k: np.asarray(v) for k, v in (labels or {}).items()}
    for name, values in labels.items():
      if len(values) != n:
        raise ValueError(f"label {name!r} has {len(values)} values for {n} poses")
    if average_over is not None and average_over not in labels:
      raise ValueError(f"average_over={average_over!r} is not one of the labels {sorted(labels)}")
    return cls(
      errors={
        p: joint_errors(pred, gt, p, scale_method=scale_method, joint_set=joint_set)
        for p in PROTOCOLS
      },
      joint_names=joint_set.joints,
      pck_joints=tuple(j for names in groups.values() for j in names),
      joint_groups=groups,
      labels=labels,
      subsets=dict(subsets) if subsets is not None else {"All": np.ones(n, dtype=bool)},
      average_over=average_over,
    )

  def _columns(self, names):
    return [self.joint_names.index(j) for j in names]

  def summary(self, protocol: str, mask: np.ndarray | None = None, joints=None) -> dict[str, float]:
    """PCK and AUC over ``pck_joints``, MPJPE over all joints; or all three over ``joints``."""
    errors = self.errors[protocol]
    if mask is not None:
      errors = errors[np.asarray(mask, dtype=bool)]
    if len(errors) == 0:
      return {"pck": float("nan"), "auc": float("nan"), "mpjpe": float("nan"), "frames": 0}
    counted = errors[:, self._columns(joints or self.pck_joints)]
    return {
      "pck": float(pck_from_errors(counted.reshape(1, -1))[0]),
      "auc": float(auc_from_errors(counted.reshape(1, -1))[0]),
      "mpjpe": float((errors if joints is None else counted).mean()),
      "frames": int(len(errors)),
    }

  def by_label(self, label: str, protocol: str) -> dict[str, dict[str, float]]:
    values = self.labels[label]
    return {str(v): self.summary(protocol, values == v) for v in sorted(set(values.tolist()))}

  def mean_over(self, label: str, protocol: str) -> dict[str, float]:
    """PCK, AUC and MPJPE averaged over the values of ``label`` with equal weight per value
    (each action counts once, whatever its frames), with ``frames`` and ``values`` counted.
    ``summary`` pools over frames instead; the two differ when values have unequal frames."""
    rows = list(self.by_label(label, protocol).values())
    out = {name: float(np.mean([row[name] for row in rows])) for name in ("pck", "auc", "mpjpe")}
    return {**out, "frames": int(sum(row["frames"] for row in rows)), "values": len(rows)}

  def by_joint_group(self, protocol: str, mask=None) -> dict[str, dict[str, float]]:
    return {g: self.summary(protocol, mask, joints=names) for g, names in self.joint_groups.items()}

  def to_json(self) -> dict:
    out = {
      "protocols": {},
      "pck_threshold_mm": PCK_THRESHOLD_MM,
      "auc_thresholds_mm": AUC_THRESHOLDS_MM.tolist(),
      "pck_joints": list(self.pck_joints),
      "averages": {"subsets": "pooled over frames: every frame's joints weigh the same"},
    }
    if self.average_over:
      out["averages"][f"mean_over_{self.average_over}"] = (
        f"unweighted mean of the by_{self.average_over} values: each {self.average_over} "
        "weighs the same, whatever its frames (the average peers report)"
      )
    for protocol in PROTOCOLS:
      entry = {
        "subsets": {s: self.summary(protocol, m) for s, m in self.subsets.items()},
        "joint_groups": self.by_joint_group(protocol),
        "per_joint_mpjpe": dict(zip(self.joint_names, self.errors[protocol].mean(0).tolist())),
      }
      for label in self.labels:
        entry[f"by_{label}"] = self.by_label(label, protocol)
      if self.average_over:
        entry[f"mean_over_{self.average_over}"] = self.mean_over(self.average_over, protocol)
      out["protocols"][protocol] = entry
    return out

  def to_markdown(self) -> str:
    """The paper's layout: one row per protocol, PCK per subset, then AUC and MPJPE."""
    names = list(self.subsets)
    lines = [
      "| Protocol | " + " | ".join(f"{s} PCK" for s in names) + " | AUC | MPJPE (mm) |",
      "|---" * (len(names) + 3) + "|",
    ]
    for protocol in PROTOCOLS:
      cells = [f"{self.summary(protocol, self.subsets[s])['pck']:.1f}" for s in names]
      overall = self.summary(protocol, self.subsets[names[-1]])
      lines.append(
        f"| {protocol} | "
        + " | ".join(cells)
        + f" | {overall['auc']:.1f} | {overall['mpjpe']:.1f} |"
      )
    sections = ["\n".join(lines)]
    sections.append(_table("Joint group", self.by_joint_group("unscaled")))
    if self.average_over:
      label = self.average_over
      last = self.subsets[names[-1]]
      both = lambda protocol: {
        f"{names[-1]}, pooled over frames": self.summary(protocol, last),
        f"mean of the per-{label} values": self.mean_over(label, protocol),
      }
      sections.append(_table("Average", both("unscaled"), pa=both("procrustes")))
    for label in self.labels:
      sections.append(
        _table(
          label.capitalize(),
          self.by_label(label, "unscaled"),
          pa=self.by_label(label, "procrustes"),
        )
      )
    return "\n\n".join(sections) + "\n"

  def dumps(self) -> str:
    return json.dumps(self.to_json(), indent=2, sort_keys=True)


def _table(key: str, rows: Mapping[str, Mapping[str, float]], pa=None) -> str:
  header = f"| {key} | PCK | AUC | MPJPE (mm) |" + (" PA-MPJPE (mm) |" if pa else "")
  lines = [header, "|---" * (4 + bool(pa)) + "|"]
  for name, row in rows.items():
    line = f"| {name} | {row['pck']:.1f} | {row['auc']:.1f} | {row['mpjpe']:.1f} |"
    if pa:
      line += f" {pa[name]['mpjpe']:.1f} |"
    lines.append(line)
  return "\n".join(lines)
