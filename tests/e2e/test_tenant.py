"""A tenant who may only create ProxyRefreshes in one namespace, acting
through RBAC impersonation against the real API server, gains nothing:
no Secret, no internal address, no foreign ConfigMap, no Redis password.

Every server here is on loopback. The world's operator allows loopback
(its testbed lives there); the guard's own tests run a second operator
whose rule allows only the addresses each test names."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis import Redis
from redis.exceptions import AuthenticationError

from proxyrefresh import constants as c
from tests.conftest import wait_for
from tests.e2e.conftest import World, refresh, wait_status
from tests.harness.kubectl import Kubectl
from tests.harness.operator_pod import OperatorPod

pytestmark = pytest.mark.e2e
TENANT = "tenant@example.com"
SECRET_HEADERS = {"Authorization": "Bearer s3cret-token", "X-Api-Key": "k3y-value"}


@dataclass
class Recorder:
    """An HTTP server that logs every request it gets (path and headers);
    ``routes`` answers a path with (status, headers, body)."""

    host: str
    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.requests.append((self.path, dict(self.headers.items())))
                status, headers, body = recorder.routes.get(self.path, (404, {}, b""))
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}"

    def credentials_seen(self) -> list[str]:
        return [
            path
            for path, headers in self.requests
            if any(v in headers.values() for v in SECRET_HEADERS.values())
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorders() -> Iterator[list[Recorder]]:
    made = [Recorder(f"127.0.0.{n}") for n in (51, 52)]
    yield made
    for recorder in made:
        recorder.close()


def grant_tenant(admin: Kubectl, resources: tuple[str, ...] = (c.PLURAL,)) -> Kubectl:
    """A user who may create and read ProxyRefreshes (or ``resources`` of
    our group) in this namespace, nothing else."""
    admin.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "refresher"},
            "rules": [
                {
                    "apiGroups": [c.GROUP],
                    "resources": list(resources),
                    "verbs": ["create", "get", "list", "watch", "delete"],
                }
            ],
        }
    )
    admin("create", "rolebinding", "refresher", "--role=refresher", f"--user={TENANT}")
    return Tenant(admin.kubeconfig, admin.namespace)


class Tenant(Kubectl):
    """kubectl as the tenant, through impersonation."""

    def __call__(self, *args: str, **kwargs: Any) -> Any:
        return super().__call__(f"--as={TENANT}", *args, **kwargs)


@pytest.fixture
def tenant(kubectl: Kubectl) -> Kubectl:
    return grant_tenant(kubectl)


def secret(name: str, labels: dict[str, str], hosts: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {c.ANNOTATION_ALLOWED_HOSTS: hosts} if hosts else {},
        },
        "stringData": SECRET_HEADERS,
    }


def failed(kubectl: Kubectl, name: str, within: float = 10) -> dict[str, Any]:
    status = wait_status(kubectl, name, lambda s: s.get("phase") == "Failed", within, "Failed")
    return dict(next(x for x in status["conditions"] if x["type"] == "Failed"))


OPTED_IN = {c.LABEL_SOURCE_CREDENTIALS: "true"}


def test_the_tenant_cannot_read_the_secret_nor_make_the_operator_send_it(
    world: World, kubectl: Kubectl, tenant: Kubectl, recorders: list[Recorder]
) -> None:
    lists, _ = recorders
    lists.routes["/list"] = (200, {}, b"127.0.0.9:3128\n")
    assert tenant("get", "secret", "list-auth", check=False).returncode != 0
    # Not opted in.
    kubectl.apply(secret("list-auth", {}))
    source = {"url": f"{lists.base}/list", "headersSecretRef": {"name": "list-auth"}}
    tenant.apply(refresh("plain", [source], world.judge))
    condition = failed(kubectl, "plain")
    assert condition["reason"] == "CredentialsNotAllowed"
    assert "Secret list-auth has not opted in" in condition["message"]
    assert "s3cret" not in json.dumps(kubectl.get("proxyrefresh", "plain"))
    # Opted in, but for another host.
    kubectl.apply(secret("list-auth", OPTED_IN, "lists.example.com"))
    tenant.apply(refresh("elsewhere", [source], world.judge))
    condition = failed(kubectl, "elsewhere")
    assert condition["reason"] == "CredentialsNotAllowed"
    assert f"not allow its headers to be sent to {lists.base}" in condition["message"]
    assert lists.credentials_seen() == []
    events = json.dumps(kubectl.get("events"))
    assert "s3cret" not in events
    assert "k3y" not in events


def test_a_redirect_to_another_host_carries_no_credential(
    world: World, kubectl: Kubectl, tenant: Kubectl, recorders: list[Recorder]
) -> None:
    first, second = recorders
    first.routes["/list"] = (302, {"Location": f"{second.base}/list"}, b"")
    # The second host answers with what a hostile server would like reflected.
    second.routes["/list"] = (200, {}, b"DATABASE_URL=postgres://admin:hunter2@db:5432/x\n")
    kubectl.apply(secret("list-auth", OPTED_IN, f"{first.base}, {second.base}"))
    source = {"url": f"{first.base}/list", "headersSecretRef": {"name": "list-auth"}}
    tenant.apply(refresh("hop", [source], world.judge))
    condition = failed(kubectl, "hop")
    assert first.credentials_seen() == ["/list"]  # allowed, and sent, to the first host
    assert [path for path, _ in second.requests] == ["/list"]
    assert second.credentials_seen() == []  # but not across the redirect
    # Nothing read from the source reaches the status or an Event.
    assert condition["reason"] == "NoCandidates"
    assert "lines are not valid proxies (first: line 1)" in condition["message"]
    for text in (json.dumps(kubectl.get("proxyrefresh", "hop")), json.dumps(kubectl.get("events"))):
        assert "hunter2" not in text
        assert "DATABASE_URL" not in text


def test_an_unmanaged_output_configmap_is_never_touched(
    world: World, kubectl: Kubectl, tenant: Kubectl
) -> None:
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "app-config"},
            "data": {"settings.json": '{"db": "primary"}'},
        }
    )
    before = kubectl.get("configmap", "app-config")
    live = [p.url for p in world.live_fixed()[:2]]
    tenant.apply(
        refresh("grab", [{"inline": live}], world.judge, output={"configMap": "app-config"})
    )
    condition = failed(kubectl, "grab")
    assert condition["reason"] == "OutputNotManaged"
    assert "output.configMap app-config exists and is not managed" in condition["message"]
    assert kubectl.get("configmap", "app-config") == before  # byte for byte, same resourceVersion
    assert not kubectl.get("jobs", "-l", f"{c.LABEL_REFRESH}=grab")["items"]


def test_workers_hold_a_redis_user_for_their_run_only(
    world: World, kubectl: Kubectl, tenant: Kubectl
) -> None:
    live = [p.url for p in world.live_fixed()[:3]]
    tenant.apply(
        refresh(
            "mine",
            [{"inline": live}],
            world.judge,
            chunkSize=1,
            retry={"maxFailedIndexes": 100},  # above the 3 chunks: clamped, not refused
        )
    )
    status = wait_status(
        kubectl, "mine", lambda s: s.get("phase") in ("Complete", "Failed"), 90, "done"
    )
    assert status["phase"] == "Complete", status
    (job,) = kubectl.get("jobs", "-l", f"{c.LABEL_REFRESH}=mine")["items"]
    assert job["spec"]["maxFailedIndexes"] == 3
    text = json.dumps(job)
    assert "redis://" not in text  # only a reference to the run's own Secret
    (container,) = job["spec"]["template"]["spec"]["containers"]
    ref = next(e for e in container["env"] if e["name"] == "PROXYREFRESH_REDIS_URL")
    name = ref["valueFrom"]["secretKeyRef"]["name"]
    owned = kubectl.get("secret", name)
    uid = kubectl.get("proxyrefresh", "mine")["metadata"]["uid"]
    assert owned["metadata"]["ownerReferences"][0]["uid"] == uid
    assert tenant("get", "secret", name, check=False).returncode != 0
    # The run is over: its user is gone, so the credential opens nothing.
    url = base64.b64decode(owned["data"]["url"]).decode()
    assert urlsplit(url).username == f"proxyrefresh-run-{uid}"
    with pytest.raises(AuthenticationError), Redis.from_url(url) as redis:
        redis.ping()


@pytest.fixture
def guarded(world: World, kubectl: Kubectl) -> Iterator[tuple[Kubectl, list[Recorder]]]:
    """A second operator with the guard on, allowing only 127.0.0.53 and the
    judge's address, watching one fresh namespace."""
    judge_host = urlsplit(world.judge).hostname
    allowed = json.dumps([f"{judge_host}/32", "127.0.0.53/32"])
    namespace = f"g-{uuid.uuid4().hex[:8]}"
    admin = Kubectl(kubectl.kubeconfig, namespace)
    admin("create", "namespace", namespace, namespaced=False)
    operator = OperatorPod(
        world.cluster,
        world.redis.url,
        f"operator-{namespace}",
        PROXYREFRESH_OPERATOR_NAMESPACES=json.dumps([namespace]),
        PROXYREFRESH_NETWORK_ALLOWED=allowed,
    )
    operator.start()
    made = [Recorder("127.0.0.53"), Recorder("127.0.0.54")]
    try:
        yield grant_tenant(admin), made
    finally:
        operator.delete()
        for recorder in made:
            recorder.close()
        admin("delete", "namespace", namespace, "--wait=false", namespaced=False, check=False)


def test_the_guard_refuses_internal_addresses_before_any_request(
    world: World, guarded: tuple[Kubectl, list[Recorder]]
) -> None:
    tenant, (allowed, internal) = guarded
    admin = Kubectl(tenant.kubeconfig, tenant.namespace)
    internal.routes["/list"] = (200, {}, b"127.0.0.9:3128\n")
    allowed.routes["/hop"] = (307, {"Location": f"{internal.base}/list"}, b"")
    sources = [{"url": f"{internal.base}/list"}, {"url": f"{allowed.base}/hop"}]
    tenant.apply(refresh("inside", sources, world.judge))
    condition = failed(admin, "inside")
    assert condition["reason"] == "NoCandidates"
    assert condition["message"].count("refused: 127.0.0.54 is a loopback address") == 2
    assert [path for path, _ in allowed.requests] == ["/hop"]
    assert internal.requests == []  # neither directly nor through the redirect
    # A judge on the metadata address is refused at once, without a packet:
    # the address is classified, never connected to.
    tenant.apply(refresh("metadata", [{"inline": ["127.0.0.9:3128"]}], "http://169.254.169.254/"))
    condition = failed(admin, "metadata")
    assert condition["reason"] == "AddressRefused"
    assert "checker.judges[0]: 169.254.169.254 is a metadata address" in condition["message"]


def deny_jobs(kubectl: Kubectl) -> None:
    """A platform's admission policy that refuses every Job in this namespace
    (a permanent 403 for the operator), in force before this returns."""
    name = f"no-jobs-{kubectl.namespace}"
    kubectl.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["batch"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["jobs"],
                        }
                    ]
                },
                "validations": [{"expression": "false", "message": "no Jobs in this namespace"}],
            },
        }
    )
    kubectl.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": kubectl.namespace}
                    }
                },
            },
        }
    )
    probe = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "probe"},
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}
            }
        },
    }

    def denied() -> bool:
        result = kubectl(
            "create", "--dry-run=server", "-f", "-", stdin=json.dumps(probe), check=False
        )
        return "no Jobs in this namespace" in result.stderr

    wait_for(denied, 30, "the admission policy to be in force")


def test_a_permanent_api_error_fails_at_once_and_never_rescrapes(
    world: World, kubectl: Kubectl, tenant: Kubectl, recorders: list[Recorder]
) -> None:
    lists, _ = recorders
    lists.routes["/list"] = (200, {}, b"\n".join(p.url.encode() for p in world.live_fixed()[:2]))
    deny_jobs(kubectl)
    tenant.apply(refresh("denied", [{"url": f"{lists.base}/list"}], world.judge))
    condition = failed(kubectl, "denied")
    assert condition["reason"] == "ApiError"
    assert condition["message"].startswith("the Kubernetes API refused: 422 Unprocessable Entity")
    assert "\n" not in condition["message"]
    assert "HTTP response headers" not in condition["message"]
    assert "no Jobs in this namespace" in condition["message"]
    status = kubectl.get("proxyrefresh", "denied")["status"]
    assert status["phase"] == "Failed"
    # Failed at the first refusal: the source was fetched once, not again per retry.
    wait_for(
        lambda: [e for e in kubectl.get("events")["items"] if e["reason"] == "ApiError"],
        10,
        "the ApiError Event",
    )
    assert [path for path, _ in lists.requests] == ["/list"]


def test_a_hanging_source_shows_which_source_and_attempt(
    world: World, kubectl: Kubectl, tenant: Kubectl
) -> None:
    (hole,) = world.bed.testbed.blackholes("127.0.0.55")
    source = {"url": f"{hole.url}/list.txt"}
    tenant.apply(refresh("slow", [source], world.judge))
    status = wait_status(
        kubectl,
        "slow",
        lambda s: "attempt 1 of" in (s.get("message") or ""),
        10,
        "the status to name the hanging source and its attempt",
    )
    assert status["phase"] == "Scraping"
    assert f"fetching url {hole.url}/list.txt: attempt 1 of 4" in status["message"]
    tenant("delete", "proxyrefresh", "slow", "--wait=false")
