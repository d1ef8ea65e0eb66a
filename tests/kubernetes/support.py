"""Checks for rendered Kubernetes objects: schemas (built-in kinds and vendored CRDs) and semantics.

* Built-in kinds: `kubernetes_validate.validate(doc, version, strict=True)` for the oldest and newest
  minor versions we support.
* Custom resources (ScaledObject, HTTPRoute): the CRD's published openAPIV3Schema (vendored under
  schemas/, see its README) turned into JSON Schema and checked with jsonschema, strictly: an object
  schema with properties rejects unknown fields (what `kubectl apply --validate=strict` asks the API
  server to do), `nullable` and `x-kubernetes-int-or-string` are honoured. CEL rules
  (`x-kubernetes-validations`) are not evaluated.
* A kind with no schema at all is a failure, never a silent pass.
* Semantics the schemas cannot see: DNS names, selectors, quantities, replica bounds, GPU limits,
  references between the objects.
"""

from __future__ import annotations

import base64
import copy
import functools
import gzip
import io
import re
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).parent
SCHEMAS = HERE / "schemas"
GOLDEN = HERE / "golden"
SPECS = HERE / "specs"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")  # oldest and newest supported minors
CRD_FILES = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway.networking.k8s.io_httproutes.yaml",
}
BUILTIN = {("v1", "ConfigMap"), ("v1", "Service"), ("apps/v1", "Deployment"), ("policy/v1", "PodDisruptionBudget"),
           ("autoscaling/v2", "HorizontalPodAutoscaler"), ("v1", "ServiceAccount"),
           ("rbac.authorization.k8s.io/v1", "Role"), ("rbac.authorization.k8s.io/v1", "RoleBinding")}

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# resource.Quantity's grammar: a decimal number, then a binary SI, decimal SI or exponent suffix.
QUANTITY = re.compile(r"^(?P<number>[+-]?(\d+(\.\d*)?|\.\d+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|"
                      r"[eE][+-]?\d+)?$")
_SUFFIX = {None: 1.0, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
           "E": 1e18, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60}
GPU = "nvidia.com/gpu"


# --- schemas ------------------------------------------------------------------------------------------
def structural_to_jsonschema(node: Any) -> Any:
    """A CRD structural schema node as strict JSON Schema."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: structural_to_jsonschema(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = structural_to_jsonschema(value)
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [structural_to_jsonschema(child) for child in value]
        elif key in ("description", "format", "nullable", "default", "example") or key.startswith("x-kubernetes-"):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("allOf", []).append({"type": ["integer", "string"]})
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields", False)
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node and not preserve:
        out["additionalProperties"] = False
    return out


OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 253},
        "namespace": {"type": "string", "maxLength": 63},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    crd = next(doc for doc in yaml.safe_load_all((SCHEMAS / CRD_FILES[(api_version, kind)]).read_text()) if doc)
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    schema = structural_to_jsonschema(served[version]["schema"]["openAPIV3Schema"])
    schema["properties"]["apiVersion"] = {"const": api_version}
    schema["properties"]["kind"] = {"const": kind}
    schema["properties"]["metadata"] = OBJECT_META
    schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind", "metadata", "spec"})
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_problems(doc: dict[str, Any], versions: tuple[str, ...] = KUBERNETES_VERSIONS) -> list[str]:
    """Every schema problem of one object; a kind without a schema is one."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    what = f"{key[1]}/{doc.get('metadata', {}).get('name')}"
    if key in CRD_FILES:
        validator = crd_validator(*key)  # type: ignore[arg-type]
        return [f"{what}: {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    if key not in BUILTIN:
        return [f"{what}: no schema for {key[0]} {key[1]}: an unvalidated kind counts as a failure"]
    problems = []
    for version in versions:
        try:
            kubernetes_validate.validate(copy.deepcopy(doc), version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{what} against {version}: {exc}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{what} against {version}: no schema ({exc})")
    return problems


# --- semantics ----------------------------------------------------------------------------------------
def quantity(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = QUANTITY.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    suffix = match.group("suffix")
    if suffix and suffix[0] in "eE":
        return float(match.group("number") + suffix)
    return float(match.group("number")) * _SUFFIX[suffix]


def _label_problems(where: str, labels: dict[str, str]) -> list[str]:
    problems = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix))) or len(name) > 63 \
                or not LABEL_NAME.match(name):
            problems.append(f"{where}: bad label key {key!r}")
        if len(value) > 63 or not LABEL_VALUE.match(value):
            problems.append(f"{where}: bad label value {key}={value!r}")
    return problems


def _subset(small: dict[str, str], big: dict[str, str]) -> bool:
    return bool(small) and all(big.get(k) == v for k, v in small.items())


def semantic_problems(objects: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in objects:
        meta = doc["metadata"]
        name = meta["name"]
        what = f"{doc['kind']}/{name}"
        by_kind.setdefault(doc["kind"], {})
        if name in by_kind[doc["kind"]]:
            problems.append(f"{what}: rendered twice")
        by_kind[doc["kind"]][name] = doc
        if len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
            problems.append(f"{what}: name is not a DNS-1123 subdomain")
        if doc["kind"] != "ConfigMap" and (len(name) > 63 or not DNS1123_LABEL.match(name)):
            problems.append(f"{what}: name is not a DNS-1123 label (at most 63)")
        if doc["kind"] == "Service" and not DNS1035_LABEL.match(name):
            problems.append(f"{what}: a Service name must be a DNS-1035 label")
        if len(meta["namespace"]) > 63 or not DNS1123_LABEL.match(meta["namespace"]):
            problems.append(f"{what}: bad namespace")
        problems += _label_problems(what, meta.get("labels", {}))
    deployments = by_kind.get("Deployment", {})
    scaled = {d["spec"]["scaleTargetRef"]["name"] for kind in ("ScaledObject", "HorizontalPodAutoscaler")
              for d in by_kind.get(kind, {}).values()}
    for name, doc in deployments.items():
        problems += _deployment_problems(doc, name in scaled, by_kind)
    for kind, key in (("Service", None), ("PodDisruptionBudget", "matchLabels")):
        for name, doc in by_kind.get(kind, {}).items():
            selector = doc["spec"]["selector"] if key is None else doc["spec"]["selector"][key]
            own = deployments.get(name)
            if own is None or not _subset(selector, own["spec"]["template"]["metadata"]["labels"]):
                problems.append(f"{kind}/{name}: selector {selector} does not select Deployment/{name}'s pods")
    for kind, low, high in (("ScaledObject", "minReplicaCount", "maxReplicaCount"),
                            ("HorizontalPodAutoscaler", "minReplicas", "maxReplicas")):
        for name, doc in by_kind.get(kind, {}).items():
            spec = doc["spec"]
            if not 0 <= spec[low] <= spec[high] or spec[high] < 1:
                problems.append(f"{kind}/{name}: replica bounds {spec[low]}..{spec[high]}")
            if spec["scaleTargetRef"]["name"] not in deployments:
                problems.append(f"{kind}/{name}: scales a Deployment that is not rendered")
    for name, doc in by_kind.get("HTTPRoute", {}).items():
        for rule in doc["spec"]["rules"]:
            for ref in rule["backendRefs"]:
                target = by_kind.get("Service", {}).get(ref["name"])
                if target is None and ref["name"] == "berth-activator":
                    continue  # the namespace's shared activator: rendered once per namespace, not per API
                if target is None or ref["port"] not in {p["port"] for p in target["spec"]["ports"]}:
                    problems.append(f"HTTPRoute/{name}: backend {ref} is no rendered Service port")
    return problems


def _deployment_problems(doc: dict[str, Any], scaled: bool, by_kind: dict[str, dict[str, Any]]) -> list[str]:
    what = f"Deployment/{doc['metadata']['name']}"
    spec = doc["spec"]
    pod = spec["template"]["spec"]
    problems = _label_problems(f"{what} template", spec["template"]["metadata"]["labels"])
    if not _subset(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"]):
        problems.append(f"{what}: selector is not a subset of the template's labels")
    if scaled == ("replicas" in spec):
        problems.append(f"{what}: replicas {'set although an autoscaler owns it' if scaled else 'missing'}")
    for volume in pod.get("volumes", []):
        if "configMap" in volume and volume["configMap"]["name"] not in by_kind.get("ConfigMap", {}):
            problems.append(f"{what}: volume {volume['name']} mounts a ConfigMap that is not rendered")
    for container in pod["containers"]:
        resources = container.get("resources", {})
        requests, limits = resources.get("requests", {}), resources.get("limits", {})
        for part in (requests, limits):
            for resource, value in part.items():
                try:
                    amount = quantity(value)
                except ValueError as exc:
                    problems.append(f"{what}: {resource}: {exc}")
                    continue
                if amount <= 0:
                    problems.append(f"{what}: {resource} {value} is not positive")
        if "memory" in limits and quantity(limits["memory"]) != quantity(requests.get("memory", -1)):
            problems.append(f"{what}: memory limit differs from its request")
        if GPU in requests or GPU in limits:
            if requests.get(GPU) != limits.get(GPU) or not isinstance(limits.get(GPU), int):
                problems.append(f"{what}: GPU requests {requests.get(GPU)} != limits {limits.get(GPU)}")
            if not any(t.get("key") == GPU for t in pod.get("tolerations", [])):
                problems.append(f"{what}: GPUs without the nvidia.com/gpu toleration")
        ports = {p["name"] for p in container.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            port = container.get(probe, {}).get("httpGet", {}).get("port")
            if port is not None and port not in ports:
                problems.append(f"{what}: {probe} names port {port!r} the container does not have")
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        if pre_stop[:1] == ["sleep"] and int(pre_stop[1]) >= pod.get("terminationGracePeriodSeconds", 30):
            problems.append(f"{what}: the preStop sleep takes the whole grace period")
    return problems


# --- golden files -------------------------------------------------------------------------------------
def tar_listing(encoded: str) -> str:
    """The members of a base64 tar.gz, instead of bytes that depend on the zlib version."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(base64.b64decode(encoded)))) as tar:
        return "tar.gz: " + ", ".join(f"{m.name} ({m.size} bytes, {m.mode:o})" for m in tar.getmembers())


def golden_view(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    view = copy.deepcopy(objects)
    for doc in view:
        if doc["kind"] == "ConfigMap":
            doc["binaryData"] = {key: tar_listing(value) for key, value in doc["binaryData"].items()}
    return view
