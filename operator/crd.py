"""The ProxyRefresh CRD, generated from the typed models in proxyrefresh.api.

    python -m proxyrefresh.operator.crd > manifests/crd.yaml

A unit test regenerates it and compares, so the committed CRD cannot drift
from the models. Pydantic's JSON schema is turned into a Kubernetes
structural schema: references inlined, optional fields unwrapped, defaults
kept (nested objects default to {} so their own defaults apply), and CEL
rules added for what one field cannot say alone.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from pydantic import BaseModel

from proxyrefresh import constants as c
from proxyrefresh.api import (
    REFRESH_NAME,
    REFRESH_NAME_MAX,
    STALLED,
    ProxyPoolSpec,
    ProxyPoolStatus,
    ProxyRefreshSpec,
    ProxyRefreshStatus,
)
from proxyrefresh.prose import unwrapped

_DROP = {"title", "additionalProperties"}

# Rules that involve more than one field, as CEL on the schema node at path.
Rules = dict[tuple[str, ...], list[dict[str, str]]]
RULES: Rules = {
    (): [
        {
            "rule": "self == oldSelf",
            "message": "spec is immutable once a refresh has started; create a new ProxyRefresh",
        }
    ],
    ("sources", "[]"): [
        {
            "rule": "[has(self.url), has(self.configMapRef), has(self.inline)]"
            ".filter(x, x).size() == 1",
            "message": "each source needs exactly one of url, configMapRef or inline",
        }
    ],
    ("checker",): [
        {
            "rule": "!has(self.connectTimeoutSeconds) || "
            "self.connectTimeoutSeconds <= self.timeoutSeconds",
            "message": "connectTimeoutSeconds must not exceed timeoutSeconds",
            "fieldPath": ".connectTimeoutSeconds",
        }
    ],
}


def name_rule(becomes: str) -> dict[str, str]:
    """metadata.name refused at admission when it could not be what it
    becomes (a label value, part of a Job's and its pods' names)."""
    return {
        "rule": f"self.metadata.name.size() <= {REFRESH_NAME_MAX} && "
        f"self.metadata.name.matches('{REFRESH_NAME}')",
        "message": f"metadata.name must be at most {REFRESH_NAME_MAX} characters of a-z, 0-9 "
        f"and '-', starting and ending with a letter or digit ({becomes})",
    }


NAME_RULE = name_rule("it becomes a label value")
# A ProxyPool's name is its pool's: every refresh of it says so in spec.pool.
POOL_NAME_RULE = name_rule("it names the pool, which refreshes name in spec.pool")


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = _inline(defs[node["$ref"].split("/")[-1]], defs)
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return {k: _inline(v, defs) for k, v in node.items()}


def _int_or_string(node: dict[str, Any]) -> dict[str, Any]:
    """``int | Literal[...]``: Kubernetes' int-or-string, its bounds and
    words checked by CEL (a structural schema allows no constraints inside
    the int-or-string branches)."""
    ints = [b for b in node["anyOf"] if b.get("type") == "integer"]
    words = [b["const"] for b in node["anyOf"] if "const" in b]
    low, high = ints[0].get("minimum"), ints[0].get("maximum")
    out: dict[str, Any] = {
        "x-kubernetes-int-or-string": True,
        "x-kubernetes-validations": [
            {
                "rule": f"type(self) == int ? (self >= {low} && self <= {high}) "
                f": self in {words!r}",
                "message": f"must be a number from {low} to {high}, or {' or '.join(words)}",
            }
        ],
    }
    if "default" in node:
        out["default"] = node["default"]
    if "description" in node:
        out["description"] = unwrapped(node["description"])
    return out


def _structural(node: dict[str, Any], path: tuple[str, ...], rules: Rules) -> dict[str, Any]:
    """Pydantic's JSON schema node -> a Kubernetes structural schema node."""
    node = dict(node)
    if node.get("x-kubernetes-int-or-string"):
        return _int_or_string(node)
    optional = False
    if "anyOf" in node:  # Optional[X]: drop the null branch
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        (only,) = branches
        node = {**only, **node}
        optional = True
    if node.get("default", 0) is None:
        node.pop("default")
    out: dict[str, Any] = {k: v for k, v in node.items() if k not in _DROP}
    if "description" in out:
        out["description"] = unwrapped(out["description"])
    if "allOf" in out:
        (only,) = out.pop("allOf")
        out = {**only, **out}
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in out and not isinstance(out[bound], bool):
            out[flag] = out.pop(bound)
            out[bound] = True
    if out.get("type") == "object" or "properties" in out:
        out["type"] = "object"
        props = {}
        for name, prop in out.get("properties", {}).items():
            child = _structural(prop, (*path, name), rules)
            # A sub-object with defaults of its own (filter, retry, ...) defaults
            # to {} so the API server fills it in; an optional one stays absent.
            if (
                child.pop("x-optional", False) is False
                and child.get("type") == "object"
                and (name not in out.get("required", []))
            ):
                child.setdefault("default", {})
            props[name] = child
        out["properties"] = props
    if out.get("type") == "array":
        out["items"] = _structural(out.get("items", {}), (*path, "[]"), rules)
    if path in rules:
        out["x-kubernetes-validations"] = list(rules[path])
    if optional:
        out["x-optional"] = True  # read and removed by the parent
    return out


def schema_of(model: type[BaseModel], rules: Rules | None = None) -> dict[str, Any]:
    """A model's JSON schema as a Kubernetes structural schema, with CEL
    ``rules`` by path."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = _structural(_inline(raw, defs), (), rules or {})
    schema.pop("x-optional", None)
    return schema


def spec_schema() -> dict[str, Any]:
    return schema_of(ProxyRefreshSpec, RULES)


def status_schema() -> dict[str, Any]:
    return schema_of(ProxyRefreshStatus)


def pool_rules() -> Rules:
    """The template is a refresh spec without its pool: its rules apply
    there too (but a pool's spec may change: it is long-lived)."""
    return {("template", *path): rule for path, rule in RULES.items() if path}


CATEGORY = "proxyrefresh-all"  # kubectl get proxyrefresh-all: refreshes and pools


def column(name: str, path: str, kind: str = "integer", wide: bool = False) -> dict[str, Any]:
    """A printer column; ``wide`` ones only with ``kubectl get -o wide``."""
    out: dict[str, Any] = {"name": name, "type": kind, "jsonPath": path}
    if wide:
        out["priority"] = 1
    return out


def condition_column(name: str, kind: str, field: str = "status", wide: bool = False) -> Any:
    """A condition's status (or reason) as a column, as cert-manager shows Ready."""
    return column(name, f'.status.conditions[?(@.type=="{kind}")].{field}', "string", wide)


AGE = column("Age", ".metadata.creationTimestamp", "date")


def definition(
    kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    spec: dict[str, Any],
    status: dict[str, Any],
    columns: list[dict[str, str]],
    validations: list[dict[str, str]],
) -> dict[str, Any]:
    """One namespaced CRD of our group with a status subresource."""
    root: dict[str, Any] = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    if validations:
        root["x-kubernetes-validations"] = validations
        root = {k: root[k] for k in ("type", "required", "x-kubernetes-validations", "properties")}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{c.GROUP}", "labels": {c.LABEL_NAME: "proxyrefresh"}},
        "spec": {
            "group": c.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                # Not "proxyrefresh": a category named like a kind's singular
                # makes `kubectl get proxyrefresh NAME` ambiguous.
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": c.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def crd() -> dict[str, Any]:
    """ProxyRefresh: one refresh."""
    return definition(
        c.KIND,
        c.PLURAL,
        c.SINGULAR,
        c.SHORT_NAMES,
        spec_schema(),
        status_schema(),
        [
            column("Pool", ".spec.pool", "string"),
            column("Phase", ".status.phase", "string"),
            column("Progress", ".status.progress", "string"),
            column("Live", ".status.live"),
            # Why it does not move (RedisUnavailable, ApiUnavailable), or Resumed.
            condition_column("Stalled", STALLED),
            AGE,
            column("Candidates", ".status.candidates", wide=True),
            column("Usable", ".status.usable", wide=True),
            column("Chunk Size", ".status.chunkSize", wide=True),
            column("Job", ".status.jobName", "string", wide=True),
            column("Message", ".status.message", "string", wide=True),
        ],
        [NAME_RULE],
    )


def pool_crd() -> dict[str, Any]:
    """ProxyPool: the long-lived pool refreshes merge into."""
    return definition(
        c.POOL_KIND,
        c.POOL_PLURAL,
        c.POOL_SINGULAR,
        c.POOL_SHORT_NAMES,
        schema_of(ProxyPoolSpec, pool_rules()),
        schema_of(ProxyPoolStatus),
        [
            column("Size", ".status.size"),
            column("Usable", ".status.usable"),
            column("Min", ".spec.minUsable"),
            condition_column("Below Minimum", "BelowMinimum"),
            condition_column("Stalled", STALLED),
            column("Last Refresh", ".status.lastRefreshAt", "date"),
            AGE,
            column("Last Refill", ".status.lastRefill", "string", wide=True),
            condition_column("Ready", "Ready", "message", wide=True),
        ],
        [POOL_NAME_RULE],
    )


HEADER = "# Generated by `python -m proxyrefresh.operator.crd`; do not edit.\n"


def render(which: dict[str, Any] | None = None) -> str:
    """One CRD as YAML (default: ProxyRefresh)."""
    return HEADER + str(yaml.safe_dump(which or crd(), sort_keys=False, width=100))


def render_all() -> str:
    """Every CRD, as manifests/crd.yaml holds them."""
    return render(crd()) + "---\n" + str(yaml.safe_dump(pool_crd(), sort_keys=False, width=100))


def main(which: str = "all") -> str:
    """all (manifests/crd.yaml), refresh or pool (one file each, for the chart's crds/)."""
    if which == "refresh":
        return render(crd())
    if which == "pool":
        return render(pool_crd())
    return render_all()


if __name__ == "__main__":
    sys.stdout.write(main(*sys.argv[1:2]))
