"""The stand-in kubelet: runs a local control plane's pods as local processes.

There is no container runtime on this machine. The pod runner registers one
Node, binds pending pods to it up to its pod capacity (it is the scheduler
too), runs each container's command with the pod's environment resolved as
a kubelet would, and writes pod status as a kubelet does, so the real Job,
CronJob, ReplicaSet and garbage-collector controllers see real successes,
failures, retries and deletions.

The image only decides which local environment runs a command: our image
(``.../proxyrefresh:tag``) runs with the project's virtualenv first on PATH
and ``proxyrefresh`` as its entrypoint; any other image runs its command as
it is on this machine. A pod that may use its ServiceAccount gets a
kubeconfig with a TokenRequest token bound to the pod (``KUBECONFIG``), so
RBAC applies to it for real.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.harness.kubeconfig import write_kubeconfig

log = logging.getLogger("podrunner")

OUR_IMAGE = re.compile(r"(^|/)proxyrefresh(:[\w.-]+)?(@sha256:[0-9a-f]+)?$")
VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
TERMINAL = ("Succeeded", "Failed")
RESTART_BACKOFF_CAP = 10.0


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, $$ escapes."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return VAR_REF.sub(sub, text)


class ConfigError(Exception):
    """CreateContainerConfigError: the pod cannot start until this is fixed."""


def field_path(pod: dict[str, Any], path: str, node: str) -> str:
    meta = pod["metadata"]
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": node,
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path] or "")
    found = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if found:
        return str((meta.get(found.group(1)) or {}).get(found.group(2), ""))
    raise ConfigError(f"unsupported fieldRef {path}")


@dataclass
class Container:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log_path: Path
    image: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    restarts: int = 0
    restart_at: float | None = None


@dataclass
class RunningPod:
    namespace: str
    name: str
    uid: str
    restart_policy: str
    start_time: str
    started_mono: float
    active_deadline: float | None
    containers: list[Container] = field(default_factory=list)
    kill_at: float | None = None  # SIGKILL after this, once terminating
    reason: str | None = None  # DeadlineExceeded, ...
    message: str | None = None
    deleting: bool = False


class PodRunner:
    def __init__(
        self,
        api: client.CoreV1Api,
        node: str,
        capacity: int,
        state: Path,
        venv: Path,
        server: str,
        ca_data: str,
    ) -> None:
        self.api = api
        self.node = node
        self.capacity = capacity
        self.state = state
        self.venv = venv
        self.server = server
        self.ca_data = ca_data
        self.pods: dict[str, dict[str, Any]] = {}
        self.running: dict[str, RunningPod] = {}
        self.config_errors: dict[str, float] = {}
        # Pods this runner ran to the end: never started again, even while
        # the watch still shows them Running.
        self.finished: set[str] = set()
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()

    # --- the Node -----------------------------------------------------------

    def register_node(self) -> None:
        resources = {"cpu": str(os.cpu_count() or 2), "memory": "24Gi", "pods": str(self.capacity)}
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux"},
            },
        }
        try:
            self.api.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.api.patch_node_status(
            self.node,
            {
                "status": {
                    "capacity": resources,
                    "allocatable": resources,
                    "addresses": [
                        {"type": "InternalIP", "address": "127.0.0.1"},
                        {"type": "Hostname", "address": self.node},
                    ],
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "PodRunnerReady",
                            "message": "the proxyrefresh pod runner is up",
                            "lastHeartbeatTime": now_iso(),
                            "lastTransitionTime": now_iso(),
                        }
                    ],
                    "nodeInfo": {
                        "kubeletVersion": "podrunner",
                        "operatingSystem": "linux",
                        "architecture": "amd64",
                        "containerRuntimeVersion": "local://",
                        "kernelVersion": "",
                        "osImage": "",
                        "kubeProxyVersion": "",
                        "machineID": "",
                        "systemUUID": "",
                        "bootID": "",
                    },
                }
            },
        )

    # --- watching -------------------------------------------------------------

    def watch_pods(self) -> None:
        """Feed every pod event into the queue, re-listing when the watch
        expires (HTTP 410)."""
        while True:
            try:
                listing = self.api.list_pod_for_all_namespaces(_preload_content=False)
                data = json.loads(listing.data)
                seen = set()
                for item in data["items"]:
                    seen.add(item["metadata"]["uid"])
                    self.events.put(("MODIFIED", item))
                self.events.put(("SYNC", {"uids": list(seen)}))
                version = data["metadata"]["resourceVersion"]
                stream = watch.Watch().stream(
                    self.api.list_pod_for_all_namespaces,
                    resource_version=version,
                    timeout_seconds=300,
                    allow_watch_bookmarks=True,
                )
                for event in stream:
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self.events.put((event["type"], event["raw_object"]))
            except ApiException as exc:
                if exc.status != 410:
                    log.warning("pod watch failed: %s", exc)
                    time.sleep(1)
            except Exception as exc:
                log.warning("pod watch broke: %s", exc)
                time.sleep(1)

    # --- the loop -----------------------------------------------------------

    def run(self) -> None:
        self.register_node()
        threading.Thread(target=self.watch_pods, daemon=True).start()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        last_heartbeat = time.monotonic()
        while not stop.is_set():
            try:
                kind, obj = self.events.get(timeout=0.1)
                self.apply_event(kind, obj)
                while not self.events.empty():
                    self.apply_event(*self.events.get_nowait())
            except queue.Empty:
                pass
            try:
                self.reconcile()
                if time.monotonic() - last_heartbeat > 30:
                    self.register_node()
                    last_heartbeat = time.monotonic()
            except Exception:
                log.exception("reconcile failed")
        for pod in list(self.running.values()):
            self.signal(pod, signal.SIGKILL)

    def apply_event(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "SYNC":
            for uid in set(self.pods) - set(obj["uids"]):
                self.pods.pop(uid, None)
            return
        uid = obj["metadata"]["uid"]
        if kind == "DELETED":
            self.pods.pop(uid, None)
            self.finished.discard(uid)
            running = self.running.get(uid)
            if running and not running.kill_at:
                self.terminate(running, grace=0)
            return
        self.pods[uid] = obj

    def mine(self, pod: dict[str, Any]) -> bool:
        return bool(pod["spec"].get("nodeName") == self.node)

    def reconcile(self) -> None:
        active = sum(
            1
            for p in self.pods.values()
            if self.mine(p) and p.get("status", {}).get("phase") not in TERMINAL
        )
        for uid, pod in list(self.pods.items()):
            spec, meta = pod["spec"], pod["metadata"]
            phase = pod.get("status", {}).get("phase", "Pending")
            if meta.get("deletionTimestamp"):
                self.handle_deletion(uid, pod)
            elif not spec.get("nodeName") and phase == "Pending":
                ours = spec.get("schedulerName", "default-scheduler") in ("default-scheduler", "")
                if ours and active < self.capacity and self.bind(pod):
                    active += 1
            elif (
                self.mine(pod)
                and uid not in self.running
                and uid not in self.finished
                and phase not in TERMINAL
                and time.monotonic() >= self.config_errors.get(uid, 0)
            ):
                self.start(pod)
        for running in list(self.running.values()):
            self.tend(running)

    def bind(self, pod: dict[str, Any]) -> bool:
        meta = pod["metadata"]
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=meta["name"]),
            target=client.V1ObjectReference(kind="Node", api_version="v1", name=self.node),
        )
        try:
            self.api.create_namespaced_pod_binding(
                meta["name"], meta["namespace"], body, _preload_content=False
            )
            pod["spec"]["nodeName"] = self.node  # until the watch says so
            return True
        except ApiException as exc:
            log.info("bind %s/%s: %s", meta["namespace"], meta["name"], exc.reason)
            return False

    # --- starting -----------------------------------------------------------

    def pod_dir(self, pod: dict[str, Any]) -> Path:
        meta = pod["metadata"]
        path = self.state / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def service_account_kubeconfig(self, pod: dict[str, Any], where: Path) -> Path | None:
        spec, meta = pod["spec"], pod["metadata"]
        sa_name = spec.get("serviceAccountName") or "default"
        automount = spec.get("automountServiceAccountToken")
        if automount is None:
            try:
                sa = self.api.read_namespaced_service_account(sa_name, meta["namespace"])
                automount = sa.automount_service_account_token
            except ApiException as exc:
                raise ConfigError(f"serviceaccount {sa_name}: {exc.reason}") from exc
        if automount is False:
            return None
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[],
                expiration_seconds=24 * 3600,
                bound_object_ref=client.V1BoundObjectReference(
                    kind="Pod", api_version="v1", name=meta["name"], uid=meta["uid"]
                ),
            )
        )
        try:
            token = self.api.create_namespaced_service_account_token(
                sa_name, meta["namespace"], request
            ).status.token
        except ApiException as exc:
            raise ConfigError(f"token for serviceaccount {sa_name}: {exc.reason}") from exc
        return write_kubeconfig(
            where / "kubeconfig", self.server, self.ca_data, sa_name, token, meta["namespace"]
        )

    def resolve_env(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        env: dict[str, str] = {}

        def lookup(kind: str, ref: dict[str, Any], key: str | None) -> dict[str, str] | None:
            try:
                if kind == "configmap":
                    data = self.api.read_namespaced_config_map(ref["name"], namespace).data
                else:
                    raw = self.api.read_namespaced_secret(ref["name"], namespace).data or {}
                    data = {k: base64.b64decode(v).decode() for k, v in raw.items()}
            except ApiException as exc:
                if exc.status == 404 and ref.get("optional"):
                    return None
                raise ConfigError(f"{kind} {ref['name']}: {exc.reason}") from exc
            data = data or {}
            if key is not None and key not in data and not ref.get("optional"):
                raise ConfigError(f"{kind} {ref['name']} has no key {key}")
            return data

        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, ref_key in (("configmap", "configMapRef"), ("secret", "secretRef")):
                if ref_key in source:
                    data = lookup(kind, source[ref_key], None) or {}
                    env.update({prefix + k: v for k, v in data.items()})
        for var in container.get("env") or []:
            if "value" in var or "valueFrom" not in var:
                env[var["name"]] = expand(var.get("value", ""), env)
                continue
            source = var["valueFrom"]
            if "fieldRef" in source:
                env[var["name"]] = field_path(pod, source["fieldRef"]["fieldPath"], self.node)
            elif "configMapKeyRef" in source or "secretKeyRef" in source:
                kind = "configmap" if "configMapKeyRef" in source else "secret"
                ref = source.get("configMapKeyRef") or source["secretKeyRef"]
                found = lookup(kind, ref, ref["key"])
                if found is not None and ref["key"] in found:
                    env[var["name"]] = found[ref["key"]]
            elif "resourceFieldRef" in source:
                env[var["name"]] = "0"
            else:
                raise ConfigError(f"env {var['name']}: unsupported valueFrom")
        return env

    def start(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        uid = meta["uid"]
        where = self.pod_dir(pod)
        containers: list[Container] = []
        try:
            kubeconfig = self.service_account_kubeconfig(pod, where)
            if spec.get("initContainers"):
                raise ConfigError("initContainers are not supported by the pod runner")
            for spec_c in spec["containers"]:
                env = self.resolve_env(pod, spec_c)
                ours = bool(OUR_IMAGE.search(spec_c.get("image", "")))
                command = [expand(c, env) for c in spec_c.get("command") or []]
                args = [expand(a, env) for a in spec_c.get("args") or []]
                if not command:
                    if not ours:
                        raise ConfigError(
                            f"image {spec_c.get('image')} has no known entrypoint: "
                            "give the container a command"
                        )
                    command = ["proxyrefresh"]
                base = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "HOME": str(where),
                    "HOSTNAME": meta["name"],
                    "LANG": "C.UTF-8",
                }
                if ours:
                    base["PATH"] = f"{self.venv}:{base['PATH']}"
                if kubeconfig:
                    base["KUBECONFIG"] = str(kubeconfig)
                    base["KUBERNETES_SERVICE_HOST"] = "127.0.0.1"
                workdir = spec_c.get("workingDir") or str(where)
                if not Path(workdir).is_dir():
                    workdir = str(where)
                containers.append(
                    Container(
                        name=spec_c["name"],
                        argv=command + args,
                        env={**base, **env},
                        cwd=workdir,
                        log_path=where / f"{spec_c['name']}.log",
                        image=spec_c.get("image", ""),
                    )
                )
        except ConfigError as exc:
            log.info("pod %s/%s: %s", meta["namespace"], meta["name"], exc)
            self.config_errors[uid] = time.monotonic() + 2
            self.patch_status(
                pod,
                {
                    "phase": "Pending",
                    "containerStatuses": [
                        {
                            "name": c["name"],
                            "image": c.get("image", ""),
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "started": False,
                            "state": {
                                "waiting": {
                                    "reason": "CreateContainerConfigError",
                                    "message": str(exc),
                                }
                            },
                        }
                        for c in spec["containers"]
                    ],
                },
            )
            return
        self.config_errors.pop(uid, None)
        deadline = spec.get("activeDeadlineSeconds")
        running = RunningPod(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=uid,
            restart_policy=spec.get("restartPolicy", "Always"),
            start_time=now_iso(),
            started_mono=time.monotonic(),
            active_deadline=float(deadline) if deadline else None,
            containers=containers,
        )
        self.running[uid] = running
        for container in containers:
            self.launch(container)
        self.report(running)
        log.info("started pod %s/%s", running.namespace, running.name)

    def launch(self, container: Container) -> None:
        handle = container.log_path.open("ab")
        container.started_at = now_iso()
        container.finished_at = None
        container.exit_code = None
        container.restart_at = None
        try:
            container.proc = subprocess.Popen(
                container.argv,
                env=container.env,
                cwd=container.cwd,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            handle.write(f"podrunner: cannot start {container.argv[0]}: {exc}\n".encode())
            container.proc = None
            container.exit_code = 128
            container.finished_at = now_iso()
        finally:
            handle.close()

    # --- tending ------------------------------------------------------------

    def tend(self, pod: RunningPod) -> None:
        """Reap exits, enforce the deadline, restart per restartPolicy, and
        finish the pod when nothing is left to run."""
        changed = False
        for container in pod.containers:
            proc = container.proc
            if proc is not None and container.exit_code is None and proc.poll() is not None:
                code = proc.returncode
                container.exit_code = 128 - code if code < 0 else code
                container.finished_at = now_iso()
                changed = True
        if (
            pod.kill_at is None
            and pod.active_deadline is not None
            and (time.monotonic() - pod.started_mono > pod.active_deadline)
        ):
            pod.reason = "DeadlineExceeded"
            pod.message = (
                "Pod was active on the node longer than the specified deadline "
                f"({pod.active_deadline:g}s)"
            )
            self.terminate(pod, grace=self.grace_of(pod.uid))
            changed = True
        if pod.kill_at is not None:
            if time.monotonic() >= pod.kill_at:
                self.signal(pod, signal.SIGKILL)
            if all(c.proc is None or c.proc.poll() is not None for c in pod.containers):
                for container in pod.containers:  # reap what SIGKILL ended
                    if container.proc is not None and container.exit_code is None:
                        code = container.proc.returncode
                        container.exit_code = 128 - code if code < 0 else code
                        container.finished_at = now_iso()
                self.finish(pod)
            return
        for container in pod.containers:
            if container.exit_code is None:
                continue
            again = pod.restart_policy == "Always" or (
                pod.restart_policy == "OnFailure" and container.exit_code != 0
            )
            if not again:
                continue
            if container.restart_at is None:
                container.restart_at = time.monotonic() + min(
                    RESTART_BACKOFF_CAP, 0.5 * 2**container.restarts
                )
            elif time.monotonic() >= container.restart_at:
                container.restarts += 1
                self.launch(container)
                changed = True
        if all(c.exit_code is not None and c.restart_at is None for c in pod.containers):
            self.finish(pod)
        elif changed:
            self.report(pod)

    def grace_of(self, uid: str) -> float:
        spec = self.pods.get(uid, {}).get("spec", {})
        return float(spec.get("terminationGracePeriodSeconds", 30))

    def signal(self, pod: RunningPod, sig: int) -> None:
        for container in pod.containers:
            if container.proc is not None and container.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(container.proc.pid, sig)

    def terminate(self, pod: RunningPod, grace: float) -> None:
        pod.kill_at = time.monotonic() + grace
        self.signal(pod, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        # As a kubelet does: a terminating pod is no longer Ready (the Job
        # controller refuses to count more ready pods than active ones).
        self.report(pod, ready=False)

    def handle_deletion(self, uid: str, pod: dict[str, Any]) -> None:
        running = self.running.get(uid)
        if running is not None:
            if not running.deleting:
                running.deleting = True
                grace = pod["metadata"].get("deletionGracePeriodSeconds")
                self.terminate(running, grace=float(grace if grace is not None else 30))
            return
        if self.mine(pod) and not pod.get("_podrunner_deleted"):
            pod["_podrunner_deleted"] = True
            self.delete_now(pod["metadata"])

    def delete_now(self, meta: dict[str, Any]) -> None:
        try:
            self.api.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                grace_period_seconds=0,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=meta["uid"])
                ),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("delete %s/%s: %s", meta["namespace"], meta["name"], exc.reason)

    # --- status ---------------------------------------------------------------

    def container_status(self, c: Container, pod: RunningPod) -> dict[str, Any]:
        state: dict[str, Any]
        if c.exit_code is not None:
            reason = "Completed" if c.exit_code == 0 else "Error"
            if c.exit_code == 128 and c.proc is None:
                reason = "StartError"
            state = {
                "terminated": {
                    "exitCode": c.exit_code,
                    "reason": reason,
                    "startedAt": c.started_at,
                    "finishedAt": c.finished_at,
                }
            }
        elif c.proc is not None:
            state = {"running": {"startedAt": c.started_at}}
        else:
            state = {"waiting": {"reason": "PodInitializing"}}
        return {
            "name": c.name,
            "image": c.image,
            "imageID": f"local://{c.image}",
            "containerID": f"local://{c.proc.pid if c.proc else 0}",
            "ready": "running" in state,
            "started": "running" in state,
            "restartCount": c.restarts,
            "state": state,
        }

    def conditions(self, ready: bool, pod: RunningPod) -> list[dict[str, Any]]:
        status = "True" if ready else "False"
        at = now_iso()
        return [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": pod.start_time},
            {"type": "Initialized", "status": "True", "lastTransitionTime": pod.start_time},
            {"type": "ContainersReady", "status": status, "lastTransitionTime": at},
            {"type": "Ready", "status": status, "lastTransitionTime": at},
        ]

    def base_status(self, pod: RunningPod) -> dict[str, Any]:
        return {
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": pod.start_time,
            "containerStatuses": [self.container_status(c, pod) for c in pod.containers],
        }

    def report(self, pod: RunningPod, ready: bool | None = None) -> None:
        status = self.base_status(pod)
        if ready is None:
            ready = pod.kill_at is None and all(s["ready"] for s in status["containerStatuses"])
        status.update(phase="Running", conditions=self.conditions(ready, pod))
        self.patch_status(pod, status)

    def finish(self, pod: RunningPod) -> None:
        self.running.pop(pod.uid, None)
        self.finished.add(pod.uid)
        status = self.base_status(pod)
        codes = [c.exit_code for c in pod.containers]
        failed = pod.reason is not None or any(code != 0 for code in codes)
        status.update(
            phase="Failed" if failed else "Succeeded", conditions=self.conditions(False, pod)
        )
        if pod.reason:
            status.update(reason=pod.reason, message=pod.message or pod.reason)
        self.patch_status(pod, status)
        log.info(
            "pod %s/%s %s (exit codes %s%s)",
            pod.namespace,
            pod.name,
            status["phase"],
            codes,
            f", {pod.reason}" if pod.reason else "",
        )
        if pod.deleting:
            self.delete_now({"name": pod.name, "namespace": pod.namespace, "uid": pod.uid})

    def patch_status(self, pod: RunningPod | dict[str, Any], status: dict[str, Any]) -> None:
        if isinstance(pod, RunningPod):
            name, namespace = pod.name, pod.namespace
        else:
            name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
        try:
            self.api.patch_namespaced_pod_status(name, namespace, {"status": status})
        except ApiException as exc:
            if exc.status != 404:
                log.warning("status of %s/%s: %s", namespace, name, exc.reason)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run a local control plane's pods")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--pods", type=int, default=16)
    parser.add_argument("--venv", type=Path, default=Path(sys.executable).parent)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    config.load_kube_config(args.kubeconfig)
    raw = json.loads(Path(args.kubeconfig).read_text())
    cluster = raw["clusters"][0]["cluster"]
    runner = PodRunner(
        client.CoreV1Api(),
        args.node,
        args.pods,
        args.dir,
        args.venv,
        cluster["server"],
        cluster["certificate-authority-data"],
    )
    runner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
