"""Model files: hub → store throughput beside a plain loopback read of the same bytes, and the
downloader's peak memory while it copies a 2 GB file.

Three processes, so each figure is one program's: the stand-in hub (`python -m portal.files.standin`,
the weights generated on the fly, never on disk), moto's S3 server (the store; it keeps what it is
given, spilling to temporary files, removed when it stops), and the downloader as a cluster Job runs
it (`python -m portal.files copy`), whose peak RSS is read from the kernel when it exits.

The copy's time includes verification (the sha256 computed as the parts stream, each part's MD5
checked against the store's etag). Beside it, boto3's own multipart upload of the same bytes into
the same store: moto is a Python server, and it, not the downloader, bounds the copy here.
`MODELFLEET_BENCH_FILES_MB` changes the size (default 2048).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import httpx

from benchmarks.processes import free_port, server
from benchmarks.report import bench
from portal.files.standin import Pattern, Repo

KEYS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def loopback_read(hub: str) -> float:
    """Seconds for one plain streamed GET of the weights from the same hub (the ceiling of any copy)."""
    with httpx.Client(timeout=600) as http:
        url = f"{hub}/acme/bench/resolve/main/model.safetensors"
        start = time.perf_counter()
        with http.stream("GET", url, follow_redirects=True) as response:
            for _ in response.iter_raw(1 << 20):
                pass
        return time.perf_counter() - start


class _Generated(io.RawIOBase):
    """The stand-in's weights as a readable stream (boto3 reads it in chunks; nothing on disk)."""

    def __init__(self, size: int) -> None:
        self.blob, self.at = Pattern(size), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.blob.size - self.at)
        buffer[:n] = self.blob.read(self.at, self.at + n)
        self.at += n
        return n


def store_put(s3: Any, size: int) -> float:
    """Seconds for boto3's own multipart upload of the same bytes (its defaults: 8 MiB parts, 10
    threads) into the same store: what the store accepts, the ceiling of any hub → store copy."""
    start = time.perf_counter()
    s3.upload_fileobj(io.BufferedReader(_Generated(size), 1 << 20), "bench", "baseline/model.safetensors")
    return time.perf_counter() - start


def main() -> None:
    size = int(os.environ.get("MODELFLEET_BENCH_FILES_MB", "2048")) * (1 << 20)
    env = {**os.environ, **KEYS}
    hub_port, s3_port = free_port(), free_port()
    hub, store = f"http://127.0.0.1:{hub_port}", f"http://127.0.0.1:{s3_port}"
    with tempfile.TemporaryDirectory(prefix="bench-files-") as tmp:
        logs = Path(tmp)
        hub_cmd = [sys.executable, "-m", "portal.files.standin", "--port", str(hub_port), "--size", str(size)]
        s3_cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)]
        with (
            server(
                hub_cmd, env, f"{hub}/api/models/acme/bench/revision/main", "stand-in hub", logs / "hub.log"
            ),
            server(s3_cmd, {**env, "TMPDIR": tmp}, f"{store}/moto-api/", "moto S3 server", logs / "s3.log"),
        ):
            s3 = boto3.client(
                "s3",
                endpoint_url=store,
                region_name="us-east-1",
                aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"],
            )
            s3.create_bucket(Bucket="bench")
            # The hub's listing hashes the weights once (it publishes their sha256); not the copy's time.
            httpx.get(f"{hub}/api/models/acme/bench/tree/{Repo({}).sha}", timeout=600)
            read = loopback_read(hub)
            copy = [
                sys.executable, "-m", "portal.files", "copy", "--source", "hf", "--repository", "acme/bench",
                "--endpoint", hub, "--store-endpoint", store, "--bucket", "bench", "--prefix", "models/bench",
            ]  # fmt: skip
            start = time.perf_counter()
            process = subprocess.Popen(copy, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            assert process.stderr is not None
            errors = process.stderr.read()  # drained while it runs, so a chatty child never blocks
            _, status, usage = os.wait4(process.pid, 0)  # this child's own peak RSS, from the kernel
            took = time.perf_counter() - start
            process.returncode = os.waitstatus_to_exitcode(status)
            if process.returncode != 0:
                raise RuntimeError(f"the copy failed: {errors.decode()[-2000:]}")
            put = store_put(s3, size)
    mb = size / 1e6
    bench("model_files_throughput", mb / took, "MB/s")
    bench("model_files_loopback_read", mb / read, "MB/s")
    bench("model_files_throughput_over_loopback", (mb / took) / (mb / read), "x")
    bench("model_files_store_put", mb / put, "MB/s")  # boto3 alone into the same store
    bench("model_files_throughput_over_store_put", (mb / took) / (mb / put), "x")
    bench("model_files_peak_rss_copying", usage.ru_maxrss / 1024, "MB")  # Linux: KiB
    bench("model_files_bytes_copied", mb, "MB")


if __name__ == "__main__":
    main()
