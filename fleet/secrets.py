"""Plain secrets found by name and by value, in env and on the command line.

A stack is reviewed in pull requests, rendered to disk and applied as pod specs any namespace reader
can see: a key written in it has leaked. So the spec refuses a secret-looking env variable or
argument (the render never writes one), and the `no-plain-secrets` rule checks the same on every
object, whoever rendered it. Secrets reach pods through `secret_env` (a Secret's key as an env
variable) and, for a flag, the kubelet's `$(NAME)` expansion: `--api-key $(VLLM_API_KEY)`.

Messages never repeat the value they found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from fleet.errors import Issue
from fleet.spec import DeployTemplate, ModelServing

SECRET_WORDS = ("KEY", "APIKEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDENTIALS")
_NAME = re.compile(r"(^|_)(" + "|".join(SECRET_WORDS) + r")S?(_|$)|API_?KEY")
_FLAG = re.compile(r"(^|-)(api-?key|access-?key|token|secret|password|passwd|credentials?)(-|$)")
# Shapes of well-known credentials: a value like these is a secret whatever its variable is called.
# Every pattern starts at a fixed prefix or a word start and is bounded, so a megabyte argument is
# scanned in linear time.
_VALUES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("an API key (sk-...)", re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{16,}")),
    ("a Hugging Face token (hf_...)", re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{30,}")),
    ("a GitHub token", re.compile(r"(?<![A-Za-z0-9])(gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{30,})")),
    ("an AWS access key id", re.compile(r"(?<![A-Z0-9])(AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])")),
    ("a Slack token", re.compile(r"(?<![A-Za-z0-9])xox[abprs]-[A-Za-z0-9-]{10,}")),
    ("a JSON web token", re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    (
        "a password in a URL",
        re.compile(r"(?<![a-z0-9+.-])[a-z][a-z0-9+.-]{0,31}://[^/\s:@]{1,256}:[^/\s@]{1,256}@"),
    ),
    ("a bearer token", re.compile(r"\b(?i:bearer)\s+[A-Za-z0-9._~+/-]{16,}")),
)
_ANY = re.compile("|".join(f"(?:{p.pattern})" for _, p in _VALUES))
# A value the kubelet fills from the pod's env: `$(VLLM_API_KEY)` names a secret, it is not one.
_REFERENCE = re.compile(r"^\$\([A-Za-z_][A-Za-z0-9_]*\)$")
FIX = "keep it in a Kubernetes Secret and use secret_env: {NAME: {name: <secret>, key: <key>}}"


def is_secret_name(name: str) -> bool:
    return bool(_NAME.search(name.upper()))


def secret_kind(value: str) -> str | None:
    """What kind of credential `value` holds, or None."""
    if _ANY.search(value) is None:  # one pass for the common case: nothing
        return None
    for kind, pattern in _VALUES:
        if pattern.search(value):
            return kind
    return None


def _flag_name(token: str) -> str:
    return token.split("=", 1)[0].lstrip("-").replace("_", "-").lower()


def argv_secrets(tokens: Sequence[str]) -> list[str]:
    """What in a command line is a plain secret: a secret-named flag with a literal value, or any
    argument shaped like a credential. One message per argument."""
    return list(_argv_secrets(tuple(tokens)))


@lru_cache(maxsize=4096)  # servings share their templates' and each other's argument lists
def _argv_secrets(tokens: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    skip = -1
    for i, token in enumerate(tokens):
        if i == skip:
            continue
        if token.startswith("--") and _FLAG.search(_flag_name(token)):
            flag, eq, value = token.partition("=")
            if not eq:
                following = tokens[i + 1] if i + 1 < len(tokens) else ""
                value = "" if following.startswith("-") else following
                skip = i + 1
            if value and not _REFERENCE.match(value):
                out.append(f"{flag} has a plain value; {FIX}, and pass it as {flag} $(NAME)")
                continue
        kind = secret_kind(token)
        if kind is not None:
            out.append(f"argument {i + 1} looks like {kind}; {FIX}, and pass it as $(NAME)")
    return tuple(out)


def env_secrets(env: Mapping[str, str], allowed: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(name, problem) for every plain secret in an env mapping."""
    exempt = set(allowed)
    out: list[tuple[str, str]] = []
    for name, value in env.items():
        if name in exempt or not value:
            continue
        if is_secret_name(name) and not _REFERENCE.match(value):
            out.append((name, "is named like a secret and holds a plain value"))
        elif (kind := secret_kind(value)) is not None:
            out.append((name, f"holds what looks like {kind}"))
    return out


def serving_issues(s: ModelServing, path: str) -> list[Issue]:
    issues = [Issue(f"{path}.env.{name}", f"{problem}; {FIX}") for name, problem in env_secrets(s.env)]
    issues += [Issue(f"{path}.extra_args", message) for message in argv_secrets(s.extra_args)]
    return issues


def template_issues(t: DeployTemplate, path: str) -> list[Issue]:
    issues = [Issue(f"{path}.env.{name}", f"{problem}; {FIX}") for name, problem in env_secrets(t.env)]
    issues += [Issue(f"{path}.args", message) for message in argv_secrets(t.args)]
    return issues
