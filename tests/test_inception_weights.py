"""torch-fidelity's Inception weights fetched on first use (evaluate.inception_download): the download
with a fake URL and a stand-in for torch.hub (nothing is downloaded), its one-line failure, and the
workflow's local job that does it."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.hub

from coral import sources
from coral.io import DatasetError

REPO = Path(__file__).resolve().parent.parent


def test_the_weights_are_fetched_from_torch_fidelitys_url_into_the_configured_path(tmp_path, monkeypatch):
    fetched = []

    def fake_download(url, dst, progress=True):
        fetched.append(url)
        Path(dst).write_bytes(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    path = tmp_path / "data" / "weights-inception-2015-12-05-6726825d.pth"
    sources.download_inception_weights(path)
    assert fetched == [sources.INCEPTION_URL] and path.read_bytes() == b"weights"


def test_a_fake_url_is_copied_and_a_failed_download_says_what_to_put_where(tmp_path):
    served = tmp_path / "served.pth"
    served.write_bytes(b"stand-in weights")
    path = tmp_path / "data" / "weights.pth"
    sources.download_inception_weights(path, url=served.as_uri())  # torch.hub's real path, on a local file
    assert path.read_bytes() == b"stand-in weights"
    missing = (tmp_path / "nowhere.pth").as_uri()
    with pytest.raises(DatasetError) as info:
        sources.download_inception_weights(tmp_path / "other.pth", url=missing)
    message = str(info.value)
    assert message.startswith(f"evaluate.inception_weights_path: could not download {missing} (")
    assert message.endswith(f"download it by hand to {tmp_path / 'other.pth'}") and "\n" not in message


def dry_run(tmp_path: Path, *configfiles: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n",
                           "results/features/cifar10/reference.npz", "--configfile", str(REPO / "config.yaml"),
                           *map(str, configfiles), "--config", "preset=pilot"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_the_pilot_preset_fetches_the_weights_in_a_local_job_or_says_where_to_put_them(tmp_path):
    """With internet the pilot preset needs no manual step: CIFAR-10 through data.download and the weights
    through a local job before the reference features; with the opt-in off, one line names the file."""
    result = dry_run(tmp_path)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "rule inception_weights:\n    output: data/weights-inception-2015-12-05-6726825d.pth" in output
    assert output.index("rule inception_weights:") < output.index("rule reference_features:")
    off = tmp_path / "off.yaml"
    off.write_text("presets: {pilot: {evaluate: {inception_download: false}}}\n")
    result = dry_run(tmp_path, off)
    assert result.returncode != 0
    assert ("config error: evaluate.inception_weights_path: 'data/weights-inception-2015-12-05-6726825d.pth' is not "
            f"a file; inception-v3-compat needs torch-fidelity's Inception weights there: download "
            f"{sources.INCEPTION_URL} to data/weights-inception-2015-12-05-6726825d.pth") in result.stderr
