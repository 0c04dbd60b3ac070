"""Modelfleet's policy pack: `pulumi preview --policy-pack policies`. Builds the pack and nothing else.

Building a `PolicyPack` starts the analyzer's gRPC server and never returns: never import this file
(tests read it with `ast`; `policies/offline.py` runs the same policies from `policies.validators`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: fleet, policies

from pulumi_policy import EnforcementLevel, PolicyPack

from policies.validators import PACK_NAME, POLICIES

PolicyPack(
    name=PACK_NAME,
    policies=POLICIES,
    enforcement_level=EnforcementLevel.ADVISORY,
    display_name="Modelfleet GPU-serving guardrails",
    description="Accelerator resources, parallelism, images, secrets, probes, workspace limits, providers.",
)
