"""The MedNIST fallback: when data.source.path does not exist, synthgate fetches MedNIST through
MONAI's own resource URL and MD5 (``MedNISTDataset.resource``/``.md5`` with
``monai.apps.download_and_extract``) and reads the extracted folder.

There is no network here (MONAI's downloader resolves the URL even when the file is already in
place), so the download itself is replaced by extracting a small MedNIST-shaped archive; the test
checks that MONAI's resource and checksum are what synthgate asks for and that the result is read.
"""

import io
import tarfile

import pytest

from synthgate.config import SourceConfig
from synthgate.data.sources import read_source
from tests.helpers import pattern, png_bytes

pytestmark = pytest.mark.integration


def test_missing_path_uses_monai_mednist_resource(tmp_path, monkeypatch):
    import monai.apps

    archive = tmp_path / "fake-MedNIST.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for k, cls in enumerate(("Hand", "HeadCT")):
            for i in range(3):
                data = png_bytes(pattern(10 * k + i, (64, 64)))
                info = tarfile.TarInfo(f"MedNIST/{cls}/{i:06d}.jpeg")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    calls = []

    def fake_download_and_extract(url, filepath, output_dir, hash_val, *args, **kwargs):
        calls.append((url, filepath, output_dir, hash_val))
        with tarfile.open(archive) as tf:
            tf.extractall(output_dir, filter="data")

    monkeypatch.setattr(monai.apps, "download_and_extract", fake_download_and_extract)
    download = tmp_path / "download"
    cfg = SourceConfig(type="mednist", path=tmp_path / "not-here" / "MedNIST.tar.gz", download_dir=download)
    data = read_source(cfg)
    assert calls == [(monai.apps.MedNISTDataset.resource, str(download / "MedNIST.tar.gz"), str(download),
                      monai.apps.MedNISTDataset.md5)]
    assert data.classes == ["Hand", "HeadCT"] and len(data.items) == 6
    read_source(cfg)  # already extracted: no second download
    assert len(calls) == 1
