"""The ops view (platform admins): plaza, providers, MaaS models, limits, regions, jobs, quotas, audit."""

from __future__ import annotations

from fastapi import APIRouter

from portal.console.web import PREFIX

router = APIRouter(prefix=f"{PREFIX}/ops", include_in_schema=False)
