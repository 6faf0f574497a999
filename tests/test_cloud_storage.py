"""The converter reads raw datasets from gs:// and writes its output to gs://, against a GCS
emulator on loopback: the bytes must equal a local conversion of the same files.

Nothing leaves the machine: the emulator (gcp-storage-emulator, the test extra) listens on
127.0.0.1 and ``STORAGE_EMULATOR_HOST`` points google-cloud-storage at it; google-auth's
metadata probe is off (``NO_GCE_CHECK``) and its host is loopback. Beam has no switch for
"no credentials": with google-auth's httplib2 adapter installed (apache-beam[gcp]) it retries
``google.auth.default()`` with back-off (21 s measured, per process) before it connects
anonymously. ``GOOGLE_APPLICATION_CREDENTIALS`` names a local file holding an access token
that is already valid, so ``google.auth.default()`` answers at once and nothing refreshes it
(docs/storage.md); without that adapter Beam connects anonymously at once.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from conftest import NATIVE_FOLDERS, convert_dataset
import pytest

from beam_preprocess import storage
from beam_preprocess.records import BadRecord, safe_path

BUCKET = "wild3d-emulated"  # GCS names need 3 to 63 characters
# A dataset of .mat and images (scipy reads a file object), the one of videos and .mat (OpenCV
# reads one), the HDF5 one (h5py reads one) and H3.6M's CDF files (cdflib needs a spool).
DATASETS = ("lsp", "mpi_inf_3dhp", "mpi_inf_3dhp_test", "h36m")

pytestmark = pytest.mark.slow


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _cloud_environment(port: int, folder) -> dict:
  """What every process that talks to the emulator runs with (see the module's docstring)."""
  credentials = folder / "placeholder_credentials.json"
  credentials.write_text(
    json.dumps(
      {
        "type": "authorized_user",
        "client_id": "wild3d-test",
        "client_secret": "wild3d-test",
        "refresh_token": "wild3d-test",
        "token": "wild3d-test-placeholder",  # never refreshed: valid until the expiry below
        "expiry": "2999-01-01T00:00:00Z",
      }
    )
  )
  return {
    "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
    "NO_GCE_CHECK": "true",
    "GCE_METADATA_HOST": "127.0.0.1",
    "GCE_METADATA_IP": "127.0.0.1",
    "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
    "GOOGLE_CLOUD_PROJECT": "wild3d-test",
    # An HTTP proxy of the machine must not carry the emulator's traffic off it.
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
  }


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
  """(environment, google.cloud.storage bucket) of a fresh in-memory GCS emulator on loopback."""
  pytest.importorskip("gcp_storage_emulator", reason="the GCS emulator (pip install '.[test]')")
  pytest.importorskip("google.cloud.storage", reason="google-cloud-storage (pip install '.[test]')")
  port = _free_port()
  env = _cloud_environment(port, tmp_path_factory.mktemp("gcs"))
  command = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1"]
  command += ["--port", str(port), "--in-memory", "--default-bucket", BUCKET, "--quiet"]
  server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + 30
    while True:
      try:
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        direct.open(f"http://127.0.0.1:{port}/storage/v1/b/{BUCKET}", timeout=1)
        break
      except OSError:
        if time.monotonic() > deadline or server.poll() is not None:
          pytest.fail(f"the GCS emulator did not start on 127.0.0.1:{port}")
        time.sleep(0.2)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # this process's client too (module scope: monkeypatch is per test)
    try:
      from google.cloud import storage as gcs

      client = gcs.Client()
      assert client._connection.API_BASE_URL == f"http://127.0.0.1:{port}"  # loopback only
      yield env, client.bucket(BUCKET)
    finally:
      for key, value in saved.items():
        if value is None:
          os.environ.pop(key, None)
        else:
          os.environ[key] = value
  finally:
    server.terminate()
    server.wait(timeout=30)


def _upload(bucket, folder, prefix: str) -> int:
  """Copies every file under ``folder`` to ``gs://BUCKET/prefix/<relative path>``; the count."""
  count = 0
  for path in sorted(folder.rglob("*")):
    if path.is_file():
      bucket.blob(f"{prefix}/{path.relative_to(folder).as_posix()}").upload_from_filename(path)
      count += 1
  return count


def _local_files(folder) -> dict:
  return {
    p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
  }


def _cloud_files(bucket, prefix: str) -> dict:
  return {
    blob.name[len(prefix) + 1 :]: blob.download_as_bytes()
    for blob in bucket.list_blobs(prefix=prefix + "/")
  }


def test_gs_to_gs_conversion_equals_the_local_one_byte_for_byte(emulator, synthetic_tiny, tmp_path):
  env, bucket = emulator
  local_out = tmp_path / "local"
  for dataset in DATASETS:
    assert _upload(bucket, synthetic_tiny / NATIVE_FOLDERS[dataset], f"raw/{dataset}") > 3
  start = time.monotonic()
  processes = [
    subprocess.Popen(
      [
        sys.executable,
        "-m",
        "beam_preprocess.convert",
        f"--dataset={dataset}",
        f"--input_dir=gs://{BUCKET}/raw/{dataset}",
        f"--output_dir=gs://{BUCKET}/converted",
        "--direct_running_mode=in_memory",  # one process: its credentials are looked up once
      ],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env={**os.environ, **env},
    )
    for dataset in DATASETS
  ]
  for dataset in DATASETS:  # meanwhile, the same files from the local folder
    convert_dataset(dataset, synthetic_tiny / NATIVE_FOLDERS[dataset], local_out)
  for dataset, process in zip(DATASETS, processes):
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, f"{dataset}: {err[-3000:]}"
    assert f"-> gs://{BUCKET}/converted" in out, out
  seconds = time.monotonic() - start
  assert seconds < 300, f"the conversions took {seconds:.0f} s: a credential lookup retried?"
  local, cloud = _local_files(local_out), _cloud_files(bucket, "converted")
  for dataset in DATASETS:
    manifest = json.loads(local[f"{dataset}.manifest.json"])
    shards = [s["file"] for split in manifest["splits"].values() for s in split["shards"]]
    assert shards and sum(v["records"] for v in manifest["splits"].values()) > 0, dataset
    for name in shards:
      assert f"{dataset}/{name}" in cloud, f"{dataset}/{name} not written to gs://"
  assert sorted(cloud) == sorted(local)  # no staging folder, temporary file or stray file left
  for name in sorted(local):
    assert cloud[name] == local[name], f"{name} differs between gs:// and the local conversion"


def test_a_missing_input_prefix_is_one_line_naming_it(emulator):
  env, _ = emulator
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "beam_preprocess.convert",
      "--dataset=lsp",
      f"--input_dir=gs://{BUCKET}/no/such/folder",
      f"--output_dir=gs://{BUCKET}/unused",
    ],
    capture_output=True,
    text=True,
    env={**os.environ, **env},
    timeout=300,
  )
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
    f"convert: error: --input_dir gs://{BUCKET}/no/such/folder holds no file (a lsp download "
    "holds joints.mat, images/im*.jpg)"
  )


def test_the_spool_copies_an_object_within_its_bound(emulator):
  _, bucket = emulator
  data = bytes(range(256)) * 40
  bucket.blob("spool/S1/pose.cdf").upload_from_string(data)
  url = f"gs://{BUCKET}/spool/S1/pose.cdf"
  with storage.local_copy(url, max_bytes=len(data)) as local:
    assert local.endswith(".cdf") and not storage.is_url(local)
    with open(local, "rb") as f:
      assert f.read() == data
  assert not os.path.exists(local)  # removed on exit
  with pytest.raises(storage.FileTooLarge, match=f"{url}: 10240 bytes, over the limit of 10239"):
    with storage.local_copy(url, max_bytes=len(data) - 1):
      pass
  root = f"gs://{BUCKET}/spool"
  assert safe_path(root, "S1/pose.cdf", "annot", "-") == url
  with pytest.raises(BadRecord, match=r"^annot \[frame 3\] path: missing file S1/other.cdf$"):
    safe_path(root, "S1/other.cdf", "annot", "frame 3")
  assert storage.glob(root, "S*/*.cdf") == [url] and storage.listdir(root) == []
