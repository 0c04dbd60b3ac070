"""The `kubernetes` region runtime's observer: list and watch what Pulumi applied (Deployments,
LeaderWorkerSets, their pods and events) in each region's namespace, derive each replica's state
from the cluster's own words, and record it (`portal.observe.recorder`).

Modules, from the bottom up: `objects` (reading raw API objects), `pods` (one pod's state),
`replicas` (a placement's replicas: pods of a Deployment, groups of a LeaderWorkerSet) — these three
are pure; `kinds` (what is watched, where), `access` (credentials → an authenticated client),
`listwatch` (resumable list/watch), `inventory` (the region's current objects by placement), `logs`,
`leadership` (one watcher per region across portal replicas), `watcher` (a region: watch, derive,
record) and `starter` (the app's background part).
"""
