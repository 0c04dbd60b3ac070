"""Model files: from a hub (Hugging Face, ModelScope, an S3 bucket, a plain https URL) into a region's
S3-compatible store, pinned to a commit, verified against the hub's checksums, resumable, with
progress (docs/ops-guide.md, "Model files").

One noun per module:

- the downloader: `listing` (what a revision holds), `huggingface` / `modelscope` / `s3source` /
  `web` (the sources), `http` (reads, refusals, back-off), `bucket` (the store), `copy` (parts,
  resume, verification), `buffers` and `inorder` (bounded part buffers, the digest in part order),
  `progress`, `download` (one run, and the registry that shares runs), `__main__` (the CLI a
  cluster region's Job runs);
- the control plane: `records` (requests, copies and their history in SQL, audited), `desired`
  (a request with cluster regions as its stack file, queued as a stack update), `purge` (what a
  deleted request copied, unless something else reads it), `targets`
  (a stack's region as source and bucket), `worker` (copies for `local` regions), `availability`
  (what the deploy preflight says);
- stand-ins: `standin` (a hub speaking Hugging Face's and ModelScope's wire formats) and `demo`
  (the offline `make run`).
"""
