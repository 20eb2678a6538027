"""The Square resource: its CRD and the names its controller and workers share."""

from __future__ import annotations

from typing import Any

from proxyrefresh.fanout import Kind

GROUP = "squares.example.com"
VERSION = "v1"
PLURAL = "squares"
# Its runs' Redis keys (squares:{<uid>}:*) and users (squares-run-<uid>).
SQUARES = Kind(key_prefix="squares", user_prefix="squares-run-")
PREFIX = SQUARES.key_prefix
CONTAINER = "squarer"


def job_name(name: str, uid: str) -> str:
    """A Square's Job (and, with -redis, its Secret): one per Square."""
    return f"{name}-{uid[:8]}"


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": "Square", "plural": PLURAL, "singular": "square"},
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["numbers"],
                                    "properties": {
                                        "numbers": {"type": "array", "items": {"type": "integer"}},
                                        "chunkSize": {"type": "integer", "default": 3},
                                        # Seconds per number: a run slow enough to lose.
                                        "slowSeconds": {"type": "number", "default": 0},
                                    },
                                },
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
