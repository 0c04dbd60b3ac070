"""Usage statistics: hourly and daily rollups of the gateway's usage rows, reports over them, CSV.

`rollup` folds new `usage_records` into `usage_rollups` (incrementally, behind a watermark);
`report` answers statistics from the rollups plus the rows not rolled up yet, so figures are current
without scanning raw rows for long ranges; `export` renders a report as CSV; `retention` deletes old
raw rows the rollups already hold; `background` runs rollups and retention in the portal.
"""
