"""Hostile and broken inputs refused by name in bounded memory; a converter run never destroys good
data nor pretends to succeed (issue 15, deliverables 5 and 6)."""

import io
import json
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tracemalloc
import zlib

from absl import flags
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions, WorkerOptions
from conftest import convert_dataset
import cv2
import numpy as np
from PIL import Image
import pytest
import scipy.io
import tensorflow as tf

from beam_preprocess import convert, matfile, media, transforms
from beam_preprocess.records import BadRecord
from wild3d_tf import image_guard, predict

ROOT = pathlib.Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "wild3d_tf" / "demo_data"
BOMB_SHAPE = (3, 14, 3_600_000)  # 1.2 GB of float64, as the mat-decompression-bomb case declares


def _lsp_copy(synthetic_tiny, tmp_path):
  root = tmp_path / "lsp"
  shutil.copytree(synthetic_tiny / "lsp", root)
  return root


def _rows(path):
  return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


def _snapshot(folder):
  """{path relative to folder: bytes} of every file under it (<dataset>/<file>)."""
  folder = pathlib.Path(folder)
  return {
    str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
  }


# ------------------------------------------------------------------ a .mat that inflates to 1.2 GB


def _matlab5_bomb(path, shape=BOMB_SHAPE, name=b"joints"):
  """A MATLAB 5 file of one compressed double variable of ``shape``, all zeros, written by
  streaming (the 1.2 GB never exist in memory), laid out as scipy.io.savemat writes it."""
  count = int(np.prod(shape))
  dims = struct.pack(f"<{len(shape)}i", *shape)
  dims_element = struct.pack("<II", 5, len(dims)) + dims + b"\0" * (-len(dims) % 8)
  name_element = struct.pack("<II", 1, len(name)) + name + b"\0" * (-len(name) % 8)
  flags_element = struct.pack("<IIII", 6, 8, 6, 0)  # miUINT32, mxDOUBLE_CLASS
  data_tag = struct.pack("<II", 9, count * 8)  # miDOUBLE
  body = flags_element + dims_element + name_element + data_tag
  header = struct.pack("<II", 14, len(body) + count * 8) + body  # miMATRIX
  deflate = zlib.compressobj(9)
  parts = [deflate.compress(header)]
  zeros, left = bytes(1 << 24), count * 8
  while left:
    parts.append(deflate.compress(zeros[: min(left, len(zeros))]))
    left -= min(left, len(zeros))
  parts.append(deflate.flush())
  compressed = b"".join(parts)
  text = b"MATLAB 5.0 MAT-file, written by a test".ljust(116, b" ")
  path.write_bytes(
    text + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM" + struct.pack("<II", 15, len(compressed))
  )
  with open(path, "ab") as f:
    f.write(compressed)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
  path = tmp_path_factory.mktemp("bomb") / "joints.mat"
  _matlab5_bomb(path)
  return path


def test_matlab5_sizes_reads_declared_sizes_of_real_files(tmp_path):
  joints = np.arange(3 * 14 * 5, dtype=np.float64).reshape(3, 14, 5)
  for compress in (False, True):
    path = tmp_path / f"j{compress}.mat"
    scipy.io.savemat(path, {"joints": joints, "x": np.zeros(3, np.uint8)}, do_compression=compress)
    sizes = matfile.matlab5_sizes(path)
    # matrix tag 8, flags 16, dims (8 + 3 * 4 + 4 pad), name "joints" (8 + 6 + 2 pad), data tag 8
    assert sizes["joints"] == 8 + 16 + 24 + 16 + 8 + 210 * 8 == 1752
    # dims (1, 3) 8 + 8; the name "x" and the 3 data bytes are small elements of 8 bytes each
    assert sizes["x"] == 8 + 16 + 16 + 8 + 8 == 56
    loaded = matfile.load_mat(path, "j.mat", ["joints"], max_bytes=1752)
    np.testing.assert_array_equal(loaded["joints"], joints)
    with pytest.raises(
      BadRecord, match=r"j.mat \[-\] joints: declares 1752 bytes .* limit of 1751"
    ):
      matfile.load_mat(path, "j.mat", ["joints"], max_bytes=1751)


def test_the_bomb_is_refused_before_allocation_in_bounded_memory(bomb, monkeypatch):
  assert bomb.stat().st_size < 2_000_000  # 1.2 GB declared in under 2 MB
  assert matfile.matlab5_sizes(bomb) == {"joints": 8 * int(np.prod(BOMB_SHAPE)) + 64 + 8}

  def never(*args, **kwargs):
    raise AssertionError("scipy.io.loadmat ran on a file over the limit")

  monkeypatch.setattr(scipy.io, "loadmat", never)
  tracemalloc.start()
  try:
    with pytest.raises(BadRecord) as refused:
      matfile.load_mat(bomb, "joints.mat", ["joints"], field="joints")
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert peak < 4 << 20, peak  # the header is inflated, never the data
  assert refused.value.file == "joints.mat" and refused.value.field == "joints"
  assert f"over the limit of {matfile.MAX_MAT_BYTES} bytes (--max_mat_bytes)" in str(refused.value)


def test_the_bomb_fails_the_lsp_conversion_with_a_dead_letter_naming_it(
  synthetic_tiny, tmp_path, bomb
):
  root = _lsp_copy(synthetic_tiny, tmp_path)
  shutil.copy(bomb, root / "joints.mat")
  with pytest.raises(transforms.ConversionFailed, match="joints.mat"):
    convert_dataset("lsp", root, tmp_path / "out")
  [row] = _rows(tmp_path / "out/lsp.dead_letter.jsonl")
  assert (row["file"], row["field"]) == ("joints.mat", "joints")
  assert "over the limit of 1073741824 bytes (--max_mat_bytes)" in row["reason"]
  assert row["records"] == 8  # it stands for every image of images/
  # the limit is a flag: a lower one refuses the real file too, naming the flag's value
  shutil.copy(synthetic_tiny / "lsp/joints.mat", root / "joints.mat")
  with pytest.raises(transforms.ConversionFailed, match="over the limit of 1000 bytes"):
    convert_dataset("lsp", root, tmp_path / "out2", "--max_mat_bytes=1000")


def test_hdf5_datasets_over_the_limit_are_refused_before_reading(synthetic_tiny):
  path = next((synthetic_tiny / "mpi_inf_3dhp_test_set").glob("TS*/annot_data.mat"))
  annot = matfile.read_hdf5(path, "TS1/annot_data.mat", ["annot2", "valid_frame"])
  frames = annot["valid_frame"].shape[0]
  declared = (frames * 17 * 2 + frames) * 8
  assert matfile.read_hdf5(path, "x", ["annot2", "valid_frame"], max_bytes=declared)
  with pytest.raises(BadRecord, match=f"TS1/annot_data.mat .*declares {declared} bytes"):
    matfile.read_hdf5(path, "TS1/annot_data.mat", ["annot2", "valid_frame"], declared - 1)


# ------------------------------------------------------------------ a JPEG cut inside its scan


def _cut(data: bytes, fraction: float = 0.5) -> bytes:
  """The case's damage: cut inside the entropy-coded data, end-of-image marker appended again."""
  return data[: int(len(data) * fraction)] + b"\xff\xd9"


def _encodings():
  """JPEGs as cameras and tools write them: the shipped photos in baseline, progressive,
  optimised-Huffman, 4:4:4 and restart-interval encodings."""
  out = {}
  for photo in sorted(PHOTOS.glob("*.png")):
    image = Image.open(photo).convert("RGB")
    for name, options in {
      "baseline": {"quality": 90},
      "progressive": {"quality": 75, "progressive": True},
      "optimized": {"quality": 60, "optimize": True},
      "444": {"quality": 95, "subsampling": 0},
    }.items():
      buffer = io.BytesIO()
      image.save(buffer, "JPEG", **options)
      out[f"{photo.stem}-{name}"] = buffer.getvalue()
    restart = [cv2.IMWRITE_JPEG_RST_INTERVAL, 4]
    out[f"{photo.stem}-restart"] = cv2.imencode(".jpg", np.asarray(image)[..., ::-1], restart)[1]
    out[f"{photo.stem}-restart"] = out[f"{photo.stem}-restart"].tobytes()
  # a picture that really is mid-grey where a cut file turns grey: must not be refused
  out["uniform-grey"] = cv2.imencode(".jpg", np.full((40, 48, 3), 128, np.uint8))[1].tobytes()
  return out


ENCODINGS = _encodings()


def test_read_image_refuses_cut_jpegs_and_decodes_good_ones_unchanged(synthetic_tiny, tmp_path):
  good = dict(ENCODINGS)
  good.update({p.name: p.read_bytes() for p in sorted((synthetic_tiny / "lsp/images").glob("*"))})
  assert len(good) >= 18
  for name, data in good.items():
    path = tmp_path / "image.jpg"
    path.write_bytes(data)
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(media.read_image(path, name, "-"), expected, err_msg=name)
    for fraction in (0.3, 0.6, 0.9):
      path.write_bytes(_cut(data, fraction))
      if name == "uniform-grey":
        continue  # all of it is one block: any cut decodes to the same grey
      with pytest.raises(BadRecord, match="premature end of data segment"):
        media.read_image(path, f"{name} cut at {fraction}", "-")


def test_the_converter_dead_letters_a_cut_jpeg(synthetic_tiny, tmp_path):
  root = _lsp_copy(synthetic_tiny, tmp_path)
  image = root / "images/im0003.jpg"
  image.write_bytes(_cut(image.read_bytes()))
  manifest = convert_dataset("lsp", root, tmp_path / "out", "--max_rejected_fraction=0.5")
  [row] = _rows(tmp_path / "out/lsp.dead_letter.jsonl")
  assert (row["file"], row["record"], row["field"]) == ("images/im0003.jpg", "image 3", "image")
  assert "JPEG cut inside its image data" in row["reason"]
  assert sum(s["records"] for s in manifest["splits"].values()) == 7


def test_image_guard_refuses_cut_jpegs_in_the_graph():
  decode = tf.function(lambda b: image_guard.decode(b, tf.constant(4), image_guard.Limits()))
  for name, data in ENCODINGS.items():
    expected = tf.io.decode_jpeg(data, channels=3).numpy()
    np.testing.assert_array_equal(decode(tf.constant(data)).numpy(), expected, err_msg=name)
    if name == "uniform-grey":
      continue
    with pytest.raises(
      tf.errors.InvalidArgumentError, match="image 4: JPEG cut inside its image data"
    ):
      decode(tf.constant(_cut(data)))


def _restart_cuts(data: bytes) -> dict:
  """A restart-interval JPEG cut at its restart markers, end-of-image marker appended: right before
  the middle one and the last one (the rest of the picture grey, and libjpeg skips the probe's
  bytes while it looks for the next marker), and right after the last one (its last interval's
  MCUs missing; with chroma upsampling the corner comes out 127, not 128)."""
  scan = data.rfind(b"\xff\xda")
  markers = [scan + m.start() for m in re.finditer(rb"\xff[\xd0-\xd7]", data[scan:])]
  return {
    "before the middle marker": data[: markers[len(markers) // 2]] + b"\xff\xd9",
    "before the last marker": data[: markers[-1]] + b"\xff\xd9",
    "after the last marker": data[: markers[-1] + 2] + b"\xff\xd9",
  }


def test_jpegs_cut_at_a_restart_marker_are_refused_in_the_graph_and_the_converter(tmp_path):
  # Baseline files with a restart interval (DRI) hold ceil(MCUs / interval) - 1 restart markers
  # (T.81 B.2.4.4, E.1.4): one cut at a marker holds fewer. Colour 4:2:0 and 4:4:4, grey, odd
  # sizes; the intact files must pass unchanged.
  photo = cv2.imread(str(sorted(PHOTOS.glob("*.png"))[0]))
  files = {}
  for interval in (1, 4, 16):
    files[f"420 rst{interval}"] = cv2.imencode(
      ".jpg", photo, [cv2.IMWRITE_JPEG_RST_INTERVAL, interval]
    )
  files["444 rst7 odd"] = cv2.imencode(
    ".jpg",
    photo[:301, :457],
    [
      cv2.IMWRITE_JPEG_RST_INTERVAL,
      7,
      cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
      cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    ],
  )
  files["grey rst4 odd"] = cv2.imencode(
    ".jpg", cv2.cvtColor(photo[:203, :307], cv2.COLOR_BGR2GRAY), [cv2.IMWRITE_JPEG_RST_INTERVAL, 4]
  )
  decode = tf.function(lambda b: image_guard.decode(b, tf.constant(2), image_guard.Limits()))
  path = tmp_path / "image.jpg"
  for name, (_, encoded) in files.items():
    data = encoded.tobytes()
    assert b"\xff\xdd" in data  # a DRI segment
    expected = tf.io.decode_jpeg(data, channels=3).numpy()
    np.testing.assert_array_equal(decode(tf.constant(data)).numpy(), expected, err_msg=name)
    path.write_bytes(data)
    media.read_image(path, name, "-")
    for where, cut in _restart_cuts(data).items():
      with pytest.raises(
        tf.errors.InvalidArgumentError, match="image 2: JPEG cut inside its image data"
      ):
        decode(tf.constant(cut))
      path.write_bytes(cut)
      with pytest.raises(BadRecord, match="premature end of data segment"):
        media.read_image(path, f"{name} cut {where}", "-")


def test_the_exported_signature_and_predict_refuse_a_cut_jpeg(tiny_export, tmp_path):
  signature = tf.saved_model.load(str(tiny_export)).signatures["serving_default"]
  good = ENCODINGS["astronaut-baseline"]
  with pytest.raises(
    tf.errors.InvalidArgumentError, match="image 1: JPEG cut inside its image data"
  ):
    signature(
      images=tf.constant([good, _cut(good)]),
      boxes=tf.zeros([2, 4]),
      intrinsics=tf.zeros([2, 4]),
    )
  (tmp_path / "cut.jpg").write_bytes(_cut(good))
  (tmp_path / "good.jpg").write_bytes(good)
  paths = [str(tmp_path / "cut.jpg"), str(tmp_path / "good.jpg")]
  zeros = np.zeros(4, np.float32)
  failures = predict.predict_files(
    paths, signature, image_guard.Limits(), zeros, zeros, str(tmp_path / "out")
  )
  assert failures == [f"{paths[0]}: JPEG cut inside its image data (premature end of data segment)"]
  assert (tmp_path / "out/good.json").exists() and not (tmp_path / "out/cut.json").exists()


# ------------------------------------------------------------------ never destroy, never pretend


def test_a_typo_input_dir_leaves_the_good_shards_byte_identical(synthetic_tiny, tmp_path):
  out = tmp_path / "out"
  convert_dataset("lsp", synthetic_tiny / "lsp", out)
  before = _snapshot(out)
  assert "lsp.manifest.json" in before and sum("tfrecord" in n for n in before) == 2
  with pytest.raises(transforms.InputDirError, match="lsp_typo does not exist"):
    convert_dataset("lsp", tmp_path / "lsp_typo", out)
  assert _snapshot(out) == before
  # No staging folder either.
  assert sorted(p.name for p in out.iterdir()) == [
    "lsp",
    "lsp.dead_letter.jsonl",
    "lsp.manifest.json",
  ]


@pytest.mark.parametrize(
  "dataset,folder,message",
  [
    ("h36m", "empty", "is empty (a h36m download holds S*/MyPoseFeatures/D3_Positions_mono/*.cdf"),
    ("h36m", "missing", "does not exist (a h36m download holds S*/MyPoseFeatures/"),
    ("h36m", "lsp", "is not a h36m download: it holds none of S*/MyPoseFeatures/"),
    (
      "mpi_inf_3dhp_test",
      "lsp",
      "is not a mpi_inf_3dhp_test download: it holds none of TS*/annot_data.mat, "
      "TS*/imageSequence/img_*.jpg",
    ),
    ("lsp", "lsp_no_images", "lacks images/im*.jpg (a lsp download holds joints.mat"),
  ],
)
def test_an_empty_missing_or_wrong_input_dir_fails_before_the_output_is_touched(
  synthetic_tiny, tmp_path, dataset, folder, message
):
  (tmp_path / "empty").mkdir()
  shutil.copytree(synthetic_tiny / "lsp", tmp_path / "lsp")
  (tmp_path / "lsp_no_images").mkdir()
  shutil.copy(synthetic_tiny / "lsp/joints.mat", tmp_path / "lsp_no_images")
  with pytest.raises(transforms.InputDirError) as error:
    convert_dataset(dataset, tmp_path / folder, tmp_path / "out")
  assert message in str(error.value) and f"--input_dir {tmp_path / folder}" in str(error.value)
  assert not (tmp_path / "out").exists()


def _convert_cli(*args):
  env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
  return subprocess.run(
    [sys.executable, "-m", "beam_preprocess.convert", *args],
    capture_output=True,
    text=True,
    cwd=ROOT,
    env=env,
  )


@pytest.mark.slow
def test_the_cli_fails_in_one_line_with_the_trace_in_the_log(synthetic_tiny, tmp_path):
  run = _convert_cli("--dataset=h36m", f"--input_dir={tmp_path}/none", f"--output_dir={tmp_path}/o")
  assert run.returncode == 2
  assert run.stderr.strip().splitlines()[-1] == (
    f"convert: error: --input_dir {tmp_path}/none does not exist (a h36m download holds "
    "S*/MyPoseFeatures/D3_Positions_mono/*.cdf, S*/Videos/*.mp4)"
  )
  assert not (tmp_path / "o").exists()
  root = _lsp_copy(synthetic_tiny, tmp_path)
  for name in ("im0002.jpg", "im0005.jpg"):
    (root / "images" / name).unlink()
  run = _convert_cli(
    "--dataset=lsp",
    f"--input_dir={root}",
    f"--output_dir={tmp_path}/out",
    "--direct_running_mode=in_memory",
  )
  assert run.returncode == 1
  last = run.stderr.strip().splitlines()[-1]
  assert last.startswith("convert: failed: lsp: 2 of 8 records rejected, over the budget of 5.0%")
  assert "[while running" not in last and "Traceback" not in run.stderr
  log = pathlib.Path(last.rsplit("(full log and trace: ", 1)[1].rstrip(")"))
  assert "Traceback" in log.read_text() and "ConversionFailed" in log.read_text()
  log.unlink()


def test_a_failed_job_leaves_the_previous_shards_and_manifest_intact(synthetic_tiny, tmp_path):
  out = tmp_path / "out"
  convert_dataset("lsp", synthetic_tiny / "lsp", out, "--num_shards=2")
  before = {n: b for n, b in _snapshot(out).items() if "tfrecord" in n or "manifest" in n}
  assert len(before) == 5
  root = _lsp_copy(synthetic_tiny, tmp_path)
  for name in ("im0002.jpg", "im0005.jpg"):
    (root / "images" / name).unlink()
  # a different shard count: the new run's shard names differ, so a leak of it would show
  with pytest.raises(transforms.ConversionFailed, match="2 of 8 records rejected"):
    convert_dataset("lsp", root, out, "--num_shards=3")
  after = _snapshot(out)
  assert {n: b for n, b in after.items() if "tfrecord" in n or "manifest" in n} == before
  assert not [p for p in out.iterdir() if p.name.startswith(".staging")]
  rows = _rows(out / "lsp.dead_letter.jsonl")  # this run's reasons, where the message says
  assert sorted(r["reason"] for r in rows) == [
    "missing file images/im0002.jpg",
    "missing file images/im0005.jpg",
  ]
  # and a good run then replaces the set: the old 2-shard files go, the manifest names the new
  manifest = convert_dataset("lsp", synthetic_tiny / "lsp", out, "--num_shards=3")
  shards = sorted(p.name for p in out.glob("lsp/lsp-*.tfrecord-*"))
  assert shards == sorted(s["file"] for v in manifest["splits"].values() for s in v["shards"])
  assert all(name.endswith("-of-00003") for name in shards) and len(shards) == 6


@pytest.mark.parametrize(
  "flag", ["--num_shard=3", "--frames_per_items=10", "--crop-size=10", "stray_argument"]
)
def test_an_unknown_flag_is_an_error_naming_it(synthetic_tiny, tmp_path, flag):
  with pytest.raises(convert.UsageError, match=f"unknown flag\\(s\\) {flag}:"):
    convert_dataset("lsp", synthetic_tiny / "lsp", tmp_path / "out", flag)
  assert not (tmp_path / "out").exists()


def test_a_misspelt_required_flag_is_named_not_called_missing(synthetic_tiny, tmp_path):
  argv = [
    "convert",
    "--datset=lsp",
    f"--input_dir={synthetic_tiny / 'lsp'}",
    f"--output_dir={tmp_path}",
  ]
  with pytest.raises(convert.UsageError, match="unknown flag\\(s\\) --datset=lsp:"):
    convert.run(argv)


@pytest.mark.parametrize(
  "flag,message",
  [
    ("--frame_stride=0", "flag --frame_stride=0: 0 is not a positive integer"),
    ("--num_shards=-1", "flag --num_shards=-1: -1 is not a non-negative integer"),
    ("--records_per_shard=0", "flag --records_per_shard=0"),
    ("--frames_per_item=0", "flag --frames_per_item=0"),
    ("--test_frame_stride=0", "flag --test_frame_stride=0"),
    ("--crop_size=2", "flag --crop_size=2"),
    ("--crop_margin=-0.1", "flag --crop_margin=-0.1"),
    ("--max_rejected_fraction=1.5", "flag --max_rejected_fraction=1.5"),
    ("--max_mat_bytes=0", "flag --max_mat_bytes=0"),
    ("--max_image_bytes=-5", "flag --max_image_bytes=-5"),
  ],
)
def test_every_numeric_flag_is_validated_by_name(synthetic_tiny, tmp_path, flag, message):
  with pytest.raises(flags.IllegalFlagValueError, match=message.replace("+", "\\+")):
    convert_dataset("lsp", synthetic_tiny / "lsp", tmp_path / "out", flag)
  assert not (tmp_path / "out").exists()


def test_beam_options_are_honoured_without_runner():
  alone = convert.beam_options(["--direct_running_mode=in_memory"])
  assert alone.view_as(StandardOptions).runner == "DirectRunner"
  assert alone.view_as(DirectOptions).direct_running_mode == "in_memory"
  assert alone.view_as(DirectOptions).direct_num_workers == 2
  default = convert.beam_options([])
  assert default.view_as(DirectOptions).direct_running_mode == "multi_processing"
  assert default.view_as(WorkerOptions).default_sdk_harness_log_level == "CRITICAL"
  workers = convert.beam_options(["--direct_num_workers", "5"])
  assert workers.view_as(DirectOptions).direct_num_workers == 5
  dataflow = convert.beam_options(["--runner=DataflowRunner", "--project=p", "--region=r"])
  assert dataflow.view_as(StandardOptions).runner == "DataflowRunner"
  assert dataflow.view_as(DirectOptions).direct_running_mode == "in_memory"  # Beam's own default


def test_progress_lines_name_records_rejections_and_rate(synthetic_tiny, tmp_path, monkeypatch):
  monkeypatch.setattr(transforms, "PROGRESS_SECONDS", 0.0)
  root = _lsp_copy(synthetic_tiny, tmp_path)
  (root / "images/im0004.jpg").unlink()
  lines = []
  monkeypatch.setattr(transforms, "print", lambda *a, **k: lines.append(" ".join(a)), raising=False)
  convert_dataset("lsp", root, tmp_path / "out", "--max_rejected_fraction=0.5")
  assert len(lines) == 8, lines  # one per record or rejection with a 0 s interval
  assert lines[-1].startswith("lsp: 7 records converted, 1 rejected, ")
  assert " records/s (worker " in lines[-1]
