"""The CRD in manifests/ is generated from the models and must not drift."""

from __future__ import annotations

from pathlib import Path

import yaml

from proxyrefresh.operator.crd import crd, pool_crd, render, render_all

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crd_is_generated_from_the_models() -> None:
    committed = (ROOT / "manifests" / "crd.yaml").read_text()
    assert committed == render_all(), "run: hack/render-manifests.sh"


def spec_schema() -> dict:  # type: ignore[type-arg]
    version = crd()["spec"]["versions"][0]
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["spec"])


def test_defaults_and_bounds_reach_the_api_server() -> None:
    spec = spec_schema()
    props = spec["properties"]
    assert spec["required"] == ["sources", "checker"]
    chunk = props["chunkSize"]
    assert (chunk["x-kubernetes-int-or-string"], chunk["default"]) == (True, "auto")
    assert "self >= 1 && self <= 10000" in chunk["x-kubernetes-validations"][0]["rule"]
    assert props["parallelism"]["minimum"] == 1
    assert props["sources"]["minItems"] == 1
    assert props["checker"]["properties"]["engine"]["enum"] == ["native", "mubeng"]
    assert props["filter"]["default"] == {}
    assert props["filter"]["properties"]["minAnonymity"]["default"] == "anonymous"
    assert props["concurrencyPolicy"]["enum"] == ["Allow", "Forbid", "Replace"]
    url = props["sources"]["items"]["properties"]["url"]
    assert url["pattern"].startswith("^https?://")
    assert "default" not in url  # optional fields stay absent
    assert "default" not in props["sources"]["items"]["properties"]["configMapRef"]


def test_printer_columns() -> None:
    columns = crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == ["Pool", "Phase", "Progress", "Live", "Age"]


def test_yaml_is_loadable() -> None:
    assert yaml.safe_load(render())["kind"] == "CustomResourceDefinition"
    kinds = [d["spec"]["names"]["kind"] for d in yaml.safe_load_all(render_all())]
    assert kinds == ["ProxyRefresh", "ProxyPool"]


def test_pool_crd_columns_defaults_and_template_rules() -> None:
    version = pool_crd()["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Size", "Usable", "Last Refresh", "Age"
    ]  # fmt: skip
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["template"]
    assert spec["properties"]["scoring"]["properties"]["success"]["default"] == 1.1
    template = spec["properties"]["template"]
    assert "pool" not in template["properties"]
    sources = template["properties"]["sources"]["items"]
    assert "exactly one of url" in sources["x-kubernetes-validations"][0]["message"]
    # a pool is long-lived: its spec may change (no immutability rule)
    assert "x-kubernetes-validations" not in spec


def test_kubectl_get_proxyrefresh_names_one_kind() -> None:
    """A category spelled like a kind's name makes `kubectl get proxyrefresh
    NAME` ambiguous once a second kind shares it."""
    names = [crd()["spec"]["names"], pool_crd()["spec"]["names"]]
    spellings = {n["singular"] for n in names} | {n["plural"] for n in names}
    spellings |= {s for n in names for s in n["shortNames"]}
    assert not spellings & {cat for n in names for cat in n["categories"]}
