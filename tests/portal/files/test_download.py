"""The downloader against the stand-in hub and moto's S3 server: copies, resume after interruptions at
random offsets, verification, gates, a 1,001-file repository, sharing, cancel, patterns, mirrors."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import httpx
import pytest

from portal.files.bucket import Bucket
from portal.files.copy import TAG, Tuning
from portal.files.download import Downloads, Request, run
from portal.files.errors import Cancelled, SourceRefused, SourceUnavailable, VerificationFailed
from portal.files.huggingface import HuggingFace
from portal.files.modelscope import ModelScope
from portal.files.progress import Progress
from portal.files.s3source import S3Folder
from portal.files.standin import Blob, Bytes, Pattern, Repo, StandInHub
from portal.files.web import WebFile

MiB = 1 << 20
SMALL = Tuning(part_size=5 * MiB, parts=2, files=2, attempts=1, backoff=0.01)
FILES = {
    "config.json": Bytes(b'{"architectures": ["Qwen3ForCausalLM"]}'),
    "tokenizer.json": Bytes(b'{"model": {}}' * 2000),  # over the LFS threshold: sha256 listed, CDN redirect
    "model.safetensors": Pattern(23 * MiB + 12345, seed=7),  # five parts of 5 MiB
}


def stored(s3: Any, bucket: Bucket, path: str) -> bytes:
    body: bytes = s3.get_object(Bucket=bucket.bucket, Key=bucket.key(path))["Body"].read()
    return body


def tag(s3: Any, bucket: Bucket, path: str) -> str | None:
    tags = s3.get_object_tagging(Bucket=bucket.bucket, Key=bucket.key(path))["TagSet"]
    return {t["Key"]: t["Value"] for t in tags}.get(TAG)


def test_a_repository_is_copied_pinned_verified_and_tagged(
    hub: StandInHub, hub_url: str, bucket: Bucket, s3: Any
) -> None:
    hub.repos["acme/tiny"] = Repo(dict(FILES))
    seen: list[Progress] = []
    listing = run(
        Request(HuggingFace("acme/tiny", "main", hub_url), bucket), tuning=SMALL, progress=seen.append
    )
    assert listing.commit == hub.repos["acme/tiny"].sha  # `main` resolved once, every file read at the commit
    for path, blob in FILES.items():
        assert stored(s3, bucket, path) == blob.read(0, blob.size)
    assert tag(s3, bucket, "model.safetensors") == f"sha256:{FILES['model.safetensors'].sha256}"
    assert tag(s3, bucket, "config.json") == f"git-blob:{FILES['config.json'].git_oid}"
    assert all(f"/resolve/{listing.commit}/" in r or r.startswith("GET /cdn/") for r in hub.requests)
    last = seen[-1]
    assert (last.phase, last.files_done, last.bytes_done) == ("ready", 3, listing.total_bytes)
    assert [p.files_done for p in seen] == sorted(p.files_done for p in seen)
    # A second run finds every file done (tagged with its digest) and fetches nothing.
    before = hub.served
    run(Request(HuggingFace("acme/tiny", "main", hub_url), bucket), tuning=SMALL)
    assert hub.served == before


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_download_cut_at_random_offsets_resumes_and_ends_with_identical_bytes(
    seed: int, hub: StandInHub, hub_url: str, bucket: Bucket, s3: Any
) -> None:
    """Every attempt is cut off at a random byte (attempts=1: the cut ends the run, as a killed pod
    would); the next attempt takes up the multipart upload, so finished parts are not fetched again."""
    rnd = random.Random(seed)
    hub.repos["acme/tiny"] = Repo(dict(FILES))
    request = Request(HuggingFace("acme/tiny", "main", hub_url), bucket)
    total = sum(b.size for b in FILES.values())
    failures = 0
    while True:
        hub.cut_after = hub.served + rnd.randrange(1, 12 * MiB)
        try:
            run(request, tuning=SMALL)
            break
        except SourceUnavailable as exc:
            assert "cut off" in str(exc) or "ended at byte" in str(exc)
            failures += 1
            assert failures < 40, "no progress across attempts"
    assert failures >= 1
    for path, blob in FILES.items():
        assert stored(s3, bucket, path) == blob.read(0, blob.size)
    # What was served beyond one copy is at most the parts cut in flight (2 parts of 5 MiB a run):
    # without resume it would be the whole file again every run.
    assert hub.served <= total + failures * 2 * 5 * MiB


def test_a_corrupted_byte_fails_verification_naming_the_file(
    hub: StandInHub, hub_url: str, bucket: Bucket, s3: Any
) -> None:
    weights = Pattern(12 * MiB, seed=3)
    listed = weights.sha256
    data = bytearray(weights.read(0, weights.size))
    data[7 * MiB + 3] ^= 0x01
    broken = Bytes(bytes(data))
    broken.__dict__["sha256"] = listed  # the hub lists the digest of the good file
    hub.repos["acme/tiny"] = Repo({"config.json": FILES["config.json"], "model.safetensors": broken})
    with pytest.raises(VerificationFailed) as failed:
        run(Request(HuggingFace("acme/tiny", "main", hub_url), bucket), tuning=SMALL)
    assert failed.value.path == "model.safetensors"
    assert "model.safetensors" in str(failed.value) and listed in str(failed.value)
    listed_keys = s3.list_objects_v2(Bucket=bucket.bucket).get("Contents", [])
    assert bucket.key("model.safetensors") not in {
        o["Key"] for o in listed_keys
    }  # deleted, never left as if good


def test_a_corrupted_small_file_is_refused_before_it_is_written(
    hub: StandInHub, hub_url: str, bucket: Bucket, s3: Any
) -> None:
    good = Bytes(b'{"model": {}}' * 2000)
    tok = Bytes(good.data.replace(b"model", b"MODEL", 1))
    tok.__dict__["sha256"] = good.sha256
    hub.repos["acme/tiny"] = Repo({"tokenizer.json": tok})
    with pytest.raises(VerificationFailed, match=r"^tokenizer\.json: sha256 "):
        run(Request(HuggingFace("acme/tiny", "main", hub_url), bucket), tuning=SMALL)
    assert not s3.list_objects_v2(Bucket=bucket.bucket).get("Contents")


@pytest.mark.parametrize(
    ("token", "status"), [(None, "401"), ("hf_wrong", "403")], ids=["no-token", "not-authorized"]
)
def test_a_gated_model_fails_with_a_clear_reason(
    token: str | None, status: str, hub: StandInHub, hub_url: str, bucket: Bucket
) -> None:
    hub.repos["google/gemma-tiny"] = Repo(dict(FILES), gated=True, token="hf_granted")
    with pytest.raises(SourceRefused) as refused:
        run(Request(HuggingFace("google/gemma-tiny", "main", hub_url, token), bucket), tuning=SMALL)
    message = str(refused.value)
    assert f"gated ({status})" in message and "google/gemma-tiny" in message
    assert "restricted" in message and "token_secret" in message


def test_a_gated_model_copies_with_a_granted_token(
    hub: StandInHub, hub_url: str, bucket: Bucket, s3: Any
) -> None:
    hub.repos["google/gemma-tiny"] = Repo(dict(FILES), gated=True, token="hf_granted")
    run(Request(HuggingFace("google/gemma-tiny", "main", hub_url, "hf_granted"), bucket), tuning=SMALL)
    assert stored(s3, bucket, "config.json") == FILES["config.json"].read(0, 100)


def test_unknown_repository_and_revision_are_refused(hub: StandInHub, hub_url: str, bucket: Bucket) -> None:
    hub.repos["acme/tiny"] = Repo(dict(FILES))
    with pytest.raises(SourceRefused, match=r"acme/nope@main: repository not found \(404\)"):
        run(Request(HuggingFace("acme/nope", "main", hub_url), bucket), tuning=SMALL)
    with pytest.raises(SourceRefused, match=r"acme/tiny@v9: revision not found \(404\)"):
        run(Request(HuggingFace("acme/tiny", "v9", hub_url), bucket), tuning=SMALL)


def test_a_repository_of_1001_files_lists_across_pages_and_copies(
    hub: StandInHub, hub_url: str, bucket: Bucket, s3: Any
) -> None:
    files = {f"shards/part-{i:04d}.txt": Bytes(f"file {i}\n".encode()) for i in range(1001)}
    hub.repos["acme/many"] = Repo(dict(files))
    listing = run(
        Request(HuggingFace("acme/many", "main", hub_url), bucket),
        tuning=Tuning(files=8, parts=2, attempts=2),
    )
    assert len(listing.files) == 1001  # two pages of the tree (1000 + 1), followed by `Link: rel="next"`
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket.bucket):
        keys += [o["Key"] for o in page.get("Contents", [])]
    assert sorted(keys) == sorted(bucket.key(p) for p in files)
    assert stored(s3, bucket, "shards/part-0999.txt") == b"file 999\n"


def test_two_requests_for_the_same_files_share_one_download(
    hub: StandInHub, hub_url: str, bucket: Bucket, s3: Any
) -> None:
    hub.repos["acme/tiny"] = Repo(dict(FILES))
    downloads = Downloads(SMALL)
    first, shared_first = downloads.start(Request(HuggingFace("acme/tiny", "main", hub_url), bucket))
    second, shared_second = downloads.start(Request(HuggingFace("acme/tiny", "main", hub_url), bucket))
    assert (shared_first, shared_second) == (False, True) and first is second
    assert first.wait(60).commit == second.wait(60).commit
    assert hub.served == sum(b.size for b in FILES.values())  # every byte once


def test_cancel_stops_and_a_later_run_resumes(hub: StandInHub, hub_url: str, bucket: Bucket, s3: Any) -> None:
    hub.repos["acme/tiny"] = Repo({"model.safetensors": Pattern(30 * MiB, seed=5)})
    hub.delay = 0.02  # 2.4 s for the file: time to cancel it halfway
    downloads = Downloads(Tuning(part_size=5 * MiB, parts=1, files=1, attempts=1))
    halfway = threading.Event()

    def watch(p: Progress) -> None:
        if p.bytes_done >= 11 * MiB:
            halfway.set()

    d, _ = downloads.start(Request(HuggingFace("acme/tiny", "main", hub_url), bucket), watch)
    assert halfway.wait(30)
    d.cancel()
    with pytest.raises(Cancelled):
        d.wait(30)
    served = hub.served
    assert served < 30 * MiB
    hub.delay = 0
    run(Request(HuggingFace("acme/tiny", "main", hub_url), bucket), tuning=SMALL)
    assert hub.served - served <= 30 * MiB - 10 * MiB  # the two finished parts were not fetched again
    assert stored(s3, bucket, "model.safetensors") == hub.repos["acme/tiny"].files["model.safetensors"].read(
        0, 30 * MiB
    )


def test_patterns_select_files(hub: StandInHub, hub_url: str, bucket: Bucket, s3: Any) -> None:
    hub.repos["acme/tiny"] = Repo(
        {**FILES, "onnx/model.onnx": Bytes(b"x" * 100), "README.md": Bytes(b"# tiny")}
    )
    listing = run(
        Request(
            HuggingFace("acme/tiny", "main", hub_url),
            bucket,
            include=("*.json", "onnx/"),
            exclude=("tokenizer*",),
        ),
        tuning=SMALL,
    )
    assert [f.path for f in listing.files] == ["config.json", "onnx/model.onnx"]
    with pytest.raises(SourceRefused, match="no file matches"):
        run(Request(HuggingFace("acme/tiny", "main", hub_url), bucket, include=("*.gguf",)), tuning=SMALL)


def test_modelscope_files_are_listed_and_verified_against_their_sha256(
    hub: StandInHub, hub_url: str, bucket: Bucket, s3: Any
) -> None:
    hub.repos["qwen/tiny"] = Repo(dict(FILES))
    listing = run(Request(ModelScope("qwen/tiny", "master", hub_url), bucket), tuning=SMALL)
    assert all(f.sha256 for f in listing.files)
    assert stored(s3, bucket, "model.safetensors") == FILES["model.safetensors"].read(
        0, FILES["model.safetensors"].size
    )
    assert any(r.startswith("GET /api/v1/models/qwen/tiny/repo") for r in hub.requests)


def test_a_server_that_ignores_range_is_read_in_one_stream(
    hub: StandInHub, hub_url: str, bucket: Bucket, s3: Any
) -> None:
    hub.repos["acme/tiny"] = Repo(dict(FILES))
    hub.ignore_range = True
    run(Request(HuggingFace("acme/tiny", "main", hub_url), bucket), tuning=SMALL)
    assert stored(s3, bucket, "model.safetensors") == FILES["model.safetensors"].read(
        0, FILES["model.safetensors"].size
    )


def test_a_plain_https_file_is_copied_and_checked_by_its_given_sha256(
    hub: StandInHub, hub_url: str, bucket: Bucket, s3: Any
) -> None:
    blob = FILES["model.safetensors"]
    hub.repos["acme/tiny"] = Repo(dict(FILES))
    url = f"{hub_url}/cdn/acme/tiny/x/model.safetensors"
    run(Request(WebFile(url, blob.sha256), bucket), tuning=SMALL)
    assert tag(s3, bucket, "model.safetensors") == f"sha256:{blob.sha256}"
    with pytest.raises(VerificationFailed, match=r"^model\.safetensors: sha256 "):
        run(
            Request(WebFile(url, "0" * 64), Bucket(bucket.endpoint, bucket.bucket, "other", *_keys(bucket))),
            tuning=SMALL,
        )


def _keys(bucket: Bucket) -> tuple[str | None, str | None]:
    return bucket.access_key_id, bucket.secret_access_key


def test_files_already_in_the_store_are_checked_not_fetched(
    hub: StandInHub, hub_url: str, bucket: Bucket, s3: Any
) -> None:
    """Objects put there by hand (untagged): a matching one is read back, verified and tagged without a
    byte from the hub; one of the right size but other content is replaced."""
    hub.repos["acme/tiny"] = Repo(dict(FILES))
    weights = FILES["model.safetensors"]
    s3.put_object(
        Bucket=bucket.bucket, Key=bucket.key("model.safetensors"), Body=weights.read(0, weights.size)
    )
    wrong = bytearray(FILES["tokenizer.json"].read(0, FILES["tokenizer.json"].size))
    wrong[0] ^= 1
    s3.put_object(Bucket=bucket.bucket, Key=bucket.key("tokenizer.json"), Body=bytes(wrong))
    run(Request(HuggingFace("acme/tiny", "main", hub_url), bucket), tuning=SMALL)
    assert not any("model.safetensors" in r for r in hub.requests)  # verified in place
    assert tag(s3, bucket, "model.safetensors") == f"sha256:{weights.sha256}"
    assert stored(s3, bucket, "tokenizer.json") == FILES["tokenizer.json"].read(
        0, FILES["tokenizer.json"].size
    )


def test_a_hub_that_answers_429_and_503_is_retried_with_back_off(
    hub: StandInHub, hub_url: str, bucket: Bucket, s3: Any
) -> None:
    hub.repos["acme/tiny"] = Repo(dict(FILES))
    hub.failures = [429, 503, 502, 429]
    tuning = Tuning(part_size=5 * MiB, parts=2, files=2, attempts=5, backoff=0.01)
    run(Request(HuggingFace("acme/tiny", "main", hub_url), bucket), tuning=tuning)
    assert hub.failures == []
    blob = FILES["model.safetensors"]
    assert stored(s3, bucket, "model.safetensors") == blob.read(0, blob.size)


def test_a_hub_that_keeps_failing_fails_with_its_status(
    hub: StandInHub, hub_url: str, bucket: Bucket
) -> None:
    hub.repos["acme/tiny"] = Repo({"config.json": FILES["config.json"]})
    hub.failures = [503] * 3
    with pytest.raises(SourceUnavailable, match=r"acme/tiny: config\.json: the hub answered 503"):
        run(
            Request(HuggingFace("acme/tiny", "main", hub_url), bucket),
            tuning=Tuning(attempts=3, backoff=0.01),
        )


def test_modelscope_lists_past_its_3000_entry_cut_folder_by_folder(hub: StandInHub, hub_url: str) -> None:
    files: dict[str, Blob] = {f"{d}/part-{i:04d}.json": Bytes(b"{}") for d in ("a", "b") for i in range(1600)}
    files["config.json"] = Bytes(b"{}")
    hub.repos["qwen/many"] = Repo(files)
    with httpx.Client() as http:
        listing = ModelScope("qwen/many", "master", hub_url).listing(http)
    assert len(listing.files) == 3201  # one answer would have stopped at 3000
    assert [f.path for f in listing.files] == sorted(files)


def test_an_s3_folder_is_copied_between_buckets(bucket: Bucket, s3: Any) -> None:
    source = Bucket(
        bucket.endpoint, bucket.bucket, "incoming/tiny", bucket.access_key_id, bucket.secret_access_key
    )
    blob = Pattern(7 * MiB, seed=4)
    s3.put_object(Bucket=bucket.bucket, Key="incoming/tiny/model.safetensors", Body=blob.read(0, blob.size))
    s3.put_object(Bucket=bucket.bucket, Key="incoming/tiny/config.json", Body=b"{}")
    listing = run(Request(S3Folder(source), bucket), tuning=SMALL)
    assert [f.path for f in listing.files] == ["config.json", "model.safetensors"]
    assert stored(s3, bucket, "model.safetensors") == blob.read(0, blob.size)
    assert tag(s3, bucket, "model.safetensors") == f"size:{blob.size}"  # S3 publishes no digest to check


def test_a_429_is_retried_no_sooner_than_its_retry_after(
    hub: StandInHub, hub_url: str, bucket: Bucket
) -> None:
    hub.repos["acme/tiny"] = Repo({"config.json": FILES["config.json"]})
    hub.failures, hub.retry_after = [429], "1"
    start = time.monotonic()
    run(Request(HuggingFace("acme/tiny", "main", hub_url), bucket), tuning=Tuning(attempts=3, backoff=0.01))
    assert time.monotonic() - start >= 1.0


def test_a_shared_download_stops_only_when_its_last_sharer_cancels(
    hub: StandInHub, hub_url: str, bucket: Bucket, s3: Any
) -> None:
    hub.repos["acme/tiny"] = Repo({"model.safetensors": Pattern(20 * MiB, seed=7)})
    hub.delay = 0.02  # slow enough to cancel while it runs
    downloads = Downloads(Tuning(part_size=5 * MiB, parts=1, files=1, attempts=1))
    seen: list[int] = []
    first, _ = downloads.start(Request(HuggingFace("acme/tiny", "main", hub_url), bucket), lambda p: None)
    second, shared = downloads.start(
        Request(HuggingFace("acme/tiny", "main", hub_url), bucket), lambda p: seen.append(p.bytes_done)
    )
    assert shared and first is second and first.sharers == 2
    # The first request cancels: it lets go, and the run goes on for the second.
    assert first.detach() is False
    assert not first.cancel_event.is_set() and first.sharers == 1
    listing = second.wait(60)
    assert [f.path for f in listing.files] == ["model.safetensors"]
    assert hub.served == 20 * MiB  # every byte once, for both requests
    assert seen and seen[-1] == 20 * MiB
    assert stored(s3, bucket, "model.safetensors") == Pattern(20 * MiB, seed=7).read(0, 20 * MiB)


def test_a_shared_download_whose_sharers_all_cancel_stops(
    hub: StandInHub, hub_url: str, bucket: Bucket, s3: Any
) -> None:
    hub.repos["acme/tiny"] = Repo({"model.safetensors": Pattern(30 * MiB, seed=8)})
    hub.delay = 0.02
    downloads = Downloads(Tuning(part_size=5 * MiB, parts=1, files=1, attempts=1))
    request = Request(HuggingFace("acme/tiny", "main", hub_url), bucket)
    d, _ = downloads.start(request)
    assert downloads.start(request)[1] is True
    assert d.detach() is False
    assert d.detach() is True  # the last sharer: the run stops
    with pytest.raises(Cancelled):
        d.wait(30)
    assert hub.served < 30 * MiB
    # Nobody shares a cancelled run: the next request starts a new one, which resumes.
    again, shared = downloads.start(request)
    assert shared is False and again is not d
    assert again.wait(60).files[0].size == 30 * MiB
