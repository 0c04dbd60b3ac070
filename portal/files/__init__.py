"""Model files: from a hub (Hugging Face, ModelScope, a plain https URL) into a region's S3-compatible
store, pinned to a commit, verified against the hub's checksums, resumable, with progress.

One noun per module: `listing` (what a revision holds), `huggingface` / `modelscope` / `web` (the
sources), `http` (reads, refusals, back-off), `bucket` (the store), `copy` (parts, resume,
verification), `progress`, `download` (one run, and the registry that shares runs), `standin` (a
stand-in hub for the offline demo, the tests and the benchmark).
"""
