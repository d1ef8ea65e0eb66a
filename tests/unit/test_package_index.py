"""The test helper that writes wheels and serves them as a PEP 503 index: valid wheels, valid pages, uv installs."""

import base64
import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

import httpx
import uv

from tests.process.package_index import PackageIndex, build_wheel, normalize


def test_a_wheel_is_a_valid_pure_python_wheel(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, "Berth_Demo.Pkg", "1.2", requires=["pydantic<2", "berthdemo==1.0"])
    assert wheel.path.name == "berth_demo_pkg-1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel.path) as archive:
        names = archive.namelist()
        metadata = archive.read("berth_demo_pkg-1.2.dist-info/METADATA").decode()
        record = archive.read("berth_demo_pkg-1.2.dist-info/RECORD").decode().splitlines()
        assert archive.read("berth_demo_pkg/__init__.py").decode() == "__version__ = '1.2'\n"
        assert "Root-Is-Purelib: true" in archive.read("berth_demo_pkg-1.2.dist-info/WHEEL").decode()
        for line in record[:-1]:  # every file but RECORD itself carries its hash and size
            path, digest, size = line.split(",")
            data = archive.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert (digest, int(size)) == (f"sha256={expected}", len(data))
    assert sorted(line.split(",")[0] for line in record) == sorted(names)
    assert "Name: Berth_Demo.Pkg\nVersion: 1.2\n" in metadata
    assert "Requires-Dist: pydantic<2\nRequires-Dist: berthdemo==1.0\n" in metadata


def test_the_index_serves_pep_503_pages_and_closes(tmp_path: Path) -> None:
    with PackageIndex(tmp_path) as index:
        wheel = index.add("Berth_Demo", "1.0")
        index.add("berth-demo", "2.0")
        root = httpx.get(f"{index.url}/")
        assert root.status_code == 200 and '<a href="/simple/berth-demo/">berth-demo</a>' in root.text
        page = httpx.get(f"{index.url}/{normalize('Berth_Demo')}/").text
        link = f"/files/berth_demo-1.0-py3-none-any.whl#sha256={hashlib.sha256(wheel.path.read_bytes()).hexdigest()}"
        assert link in page and "berth_demo-2.0-py3-none-any.whl" in page
        assert httpx.get(f"http://127.0.0.1:{index.port}{link.split('#')[0]}").content == wheel.path.read_bytes()
        assert httpx.get(f"{index.url}/nothing-here/").status_code == 404
        port = index.port
    try:
        httpx.get(f"http://127.0.0.1:{port}/simple/", timeout=2)
    except httpx.ConnectError:
        pass
    else:
        raise AssertionError("the index still answers after it was closed")


def test_uv_installs_from_the_index(tmp_path: Path) -> None:
    uv_bin = uv.find_uv_bin()
    env = {**os.environ, "UV_CACHE_DIR": str(tmp_path / "cache"), "UV_NO_CONFIG": "1"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run([uv_bin, "venv", "-q", str(tmp_path / "venv")], check=True, env=env)
    python = str(tmp_path / "venv" / "bin" / "python")
    with PackageIndex(tmp_path / "wheels") as index:
        index.add("berthdemo", "1.0")
        index.add("berthdemo", "2.0")
        index.add("wants-old-pydantic", "1.0", requires=["pydantic<2"])
        install = [uv_bin, "pip", "install", "--python", python, "--index-url", index.url]
        done = subprocess.run([*install, "berthdemo==1.0"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        version = subprocess.run([python, "-c", "import berthdemo; print(berthdemo.__version__)"],
                                 capture_output=True, text=True, check=True).stdout
        assert version.strip() == "1.0"
        missing = subprocess.run([*install, "berthdemo==9.9"], env=env, capture_output=True, text=True, timeout=60)
        assert missing.returncode != 0 and "no version of berthdemo==9.9" in missing.stderr
        needs = subprocess.run([*install, "wants-old-pydantic"], env=env, capture_output=True, text=True, timeout=60)
        assert needs.returncode != 0 and "pydantic<2" in needs.stderr
