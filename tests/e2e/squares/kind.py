"""The Square resource: its CRD and the names its controller and workers share."""

from __future__ import annotations

from typing import Any

GROUP = "squares.example.com"
VERSION = "v1"
PLURAL = "squares"
PREFIX = "squares"  # its runs' Redis keys: squares:{<uid>}:*
CONTAINER = "squarer"


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
