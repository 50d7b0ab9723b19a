"""Downloads and the cache, against a real HTTP server on 127.0.0.1 serving the real head."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest

from das_ag import weights
from das_ag.errors import WeightsError

from .conftest import HEAD_SHA256


@pytest.fixture
def server(tmp_path):
    """A static file server over tmp_path/served; yields its base URL."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_places_a_verified_file(server, real_head_path, monkeypatch):
    # The download checks LAION's published checksum: this needs their file itself.
    root, url = server
    (root / "head.pth").write_bytes(real_head_path.read_bytes())
    monkeypatch.setenv(weights.ENV_AESTHETIC_URL, f"{url}/head.pth")
    path = weights.resolve_aesthetic()
    assert path == weights.cache_dir() / weights.AESTHETIC_HEAD.filename
    assert weights.sha256_file(path) == HEAD_SHA256
    # A second call uses the cache; the server is not needed any more.
    (root / "head.pth").unlink()
    assert weights.resolve_aesthetic() == path


def test_a_download_with_the_wrong_checksum_is_discarded(server, monkeypatch):
    root, url = server
    (root / "head.pth").write_bytes(b"not the aesthetic head" * 100)
    monkeypatch.setenv(weights.ENV_AESTHETIC_URL, f"{url}/head.pth")
    with pytest.raises(WeightsError, match="sha256"):
        weights.resolve_aesthetic()
    leftovers = list(weights.cache_dir().iterdir()) if weights.cache_dir().exists() else []
    assert [p.name for p in leftovers if not p.name.endswith(".lock")] == []


def test_a_corrupt_cached_file_is_never_used(head_path, monkeypatch):
    target = weights.cache_dir() / weights.AESTHETIC_HEAD.filename
    target.parent.mkdir(parents=True)
    target.write_bytes(head_path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(WeightsError, match="fails its sha256 check"):
        weights.resolve_aesthetic(download=False)
    # With downloading allowed but no network, it is still refused rather than used.
    monkeypatch.setenv(weights.ENV_AESTHETIC_URL, "http://127.0.0.1:9/head.pth")
    with pytest.raises(WeightsError, match="could not download"):
        weights.resolve_aesthetic()


def test_offline_message_names_the_variables(monkeypatch):
    monkeypatch.setenv(weights.ENV_CLIP_URL, "http://127.0.0.1:9/ViT-L-14.pt")
    with pytest.raises(WeightsError) as info:
        weights.resolve_clip("ViT-L/14")
    message = str(info.value)
    assert "CLIP_MODEL_PATH" in message and "AESTHETIC_PREDICTOR_PATH" in message and "\n" not in message


def test_clip_names_map_to_checksummed_official_files():
    wf = weights.clip_weight_file("ViT-L/14")
    assert wf.sha256 == "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"
    assert wf.filename == "ViT-L-14.pt"
    assert weights.clip_weight_file("ViT-XXL/1") is None


def test_unknown_clip_names_and_missing_paths(tmp_path):
    with pytest.raises(WeightsError, match="known name"):
        weights.resolve_clip("ViT-Q/7")
    with pytest.raises(WeightsError, match="does not exist as a file"):
        weights.resolve_clip(str(tmp_path / "missing.pt"))
    with pytest.raises(WeightsError, match="does not exist"):
        weights.resolve_aesthetic(str(tmp_path / "missing.pth"))


def test_env_paths_and_dotenv(tmp_path, tiny_clip_path, head_path, monkeypatch):
    (tmp_path / ".env").write_text(f"CLIP_MODEL_PATH={tiny_clip_path}\nAESTHETIC_PREDICTOR_PATH=/nowhere/head.pth\n")
    monkeypatch.setenv("AESTHETIC_PREDICTOR_PATH", str(head_path))  # the real environment wins
    monkeypatch.delenv("CLIP_MODEL_PATH", raising=False)
    weights.load_environment()
    assert weights.resolve_clip() == Path(tiny_clip_path)
    assert weights.resolve_aesthetic() == head_path


def test_checksums_are_remembered_until_the_file_changes(tmp_path):
    f = tmp_path / "blob.bin"
    f.write_bytes(b"a" * 1000)
    first = weights.verified_sha256(f)
    assert first == weights.sha256_file(f)
    f.write_bytes(b"b" * 1001)
    assert weights.verified_sha256(f) == weights.sha256_file(f) != first


class SlowCountingHandler(QuietHandler):
    """Serves slowly and counts the downloads, so that concurrent ones overlap and can be counted."""

    gets = 0

    def do_GET(self):
        type(self).gets += 1
        import time

        time.sleep(0.3)
        super().do_GET()


def test_sessions_downloading_one_model_at_once_share_one_download(tmp_path, monkeypatch):
    # Two studio sessions asking for the same model wrote into one temporary file named by the
    # process id, and either could install the other's half-written bytes. Now one downloads and
    # the others wait under the file lock, then find the verified file.
    import hashlib
    import os

    monkeypatch.setenv(weights.ENV_CACHE, str(tmp_path / "cache"))
    root = tmp_path / "served"
    root.mkdir()
    payload = os.urandom(3 << 20)
    (root / "model.pt").write_bytes(payload)
    handler = functools.partial(SlowCountingHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    wf = weights.WeightFile("model.pt", f"http://127.0.0.1:{httpd.server_address[1]}/model.pt",
                            hashlib.sha256(payload).hexdigest(), "test")
    results, failures = [], []

    def ask():
        try:
            results.append(weights.ensure_cached(wf))
        except Exception as exc:  # collected: an exception in a thread would pass unseen
            failures.append(exc)

    try:
        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert failures == [] and len(results) == 4
    target = weights.cache_dir() / "model.pt"
    assert set(results) == {target} and target.read_bytes() == payload
    assert SlowCountingHandler.gets == 1
    assert not list(weights.cache_dir().glob("*.partial"))

