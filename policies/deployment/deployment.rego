# Deployment: may these rendered Kubernetes objects be applied in input.environment?
#
# Input:  {"environment": ENV, "objects": [<Kubernetes object as a dict>, ...]}
#         The objects are what `helm template` renders for one release (hooks included), so
#         the test pod of a chart is judged like any other pod.
# Data:   data.ztml.environments[ENV].deployment holds the allowlists and minimums, and
#         `enforcement` says per check whether a finding denies, warns or is off
#         (policies/data.json ships local, staging and production; ztml.yaml overrides them;
#         the kubernetes runtime adds `kubernetes.approved_registries` to approved_registries).
# Output: deny (set of messages), warn (set of messages), allow (true iff deny is empty),
#         findings (every finding with its check id and level, for tooling).
#
# Every pod template (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, Pod) is
# checked container by container; a container's securityContext overrides its pod's, as in
# Kubernetes. Messages name the object and container, e.g.
# "container server of Deployment iris: image ghcr.io/x/y:latest uses the moving tag latest".
package ztml.deployment

import data.ztml.lib

env := input.environment

settings := data.ztml.environments[env].deployment

# Settings every environment's deployment data must define (a missing one is a deny).
required_settings := {
	"approved_registries",
	"required_labels",
	"min_replicas",
	"required_kinds",
	"model_uri_env_names",
	"insecure_uri_prefixes",
	"scrape_annotations",
}

default allow := false

allow if count(deny) == 0

deny contains finding.message if {
	some finding in findings
	finding.level == "deny"
}

warn contains finding.message if {
	some finding in findings
	finding.level == "warn"
}

# --- the envelope and the data (fail closed) ---------------------------------------------

deny contains "policy input has no environment (input.environment must be a string)" if {
	not is_string(object.get(input, "environment", null))
}

deny contains msg if {
	is_string(env)
	not data.ztml.environments[env]
	msg := sprintf("no policy data for environment %s (known: %s)", [env, _known_environments])
}

deny contains msg if {
	environment := data.ztml.environments[env]
	configured := object.get(environment, "deployment", {})
	some key in required_settings - {name | some name, value in configured; value != null}
	msg := sprintf("policy data for %s lacks deployment.%s", [env, key])
}

# A pattern that is not a regular expression would approve nothing, or break evaluation.
deny contains msg if {
	some pattern in object.get(settings, "approved_registry_patterns", [])
	not _valid_pattern(pattern)
	msg := sprintf(
		"policy data for %s: deployment.approved_registry_patterns entry %s is not a valid regular expression",
		[env, json.marshal(pattern)],
	)
}

_valid_pattern(pattern) if {
	is_string(pattern)
	regex.is_valid(pattern)
}

deny contains "policy input has no objects (input.objects must be a list of Kubernetes objects)" if {
	not is_array(object.get(input, "objects", null))
}

deny contains "no workload among the rendered objects (expected a Deployment or another pod template)" if {
	is_array(object.get(input, "objects", null))
	count(workloads) == 0
}

_known_environments := names if {
	names := lib.join(object.keys(data.ztml.environments))
} else := "none"

# --- what is judged ----------------------------------------------------------------------

_objects := [obj | some obj in input.objects; is_object(obj)] if {
	is_array(object.get(input, "objects", null))
} else := []

_kind(obj) := object.get(obj, "kind", "")

_name(obj) := object.get(object.get(obj, "metadata", {}), "name", "unnamed")

_ref(obj) := sprintf("%s %s", [_kind(obj), _name(obj)])

_template_kinds := {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

_long_running_kinds := {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}

_pod_spec(obj) := object.get(obj, ["spec", "template", "spec"], null) if _kind(obj) in _template_kinds

_pod_spec(obj) := object.get(obj, ["spec", "jobTemplate", "spec", "template", "spec"], null) if _kind(obj) == "CronJob"

_pod_spec(obj) := object.get(obj, "spec", null) if _kind(obj) == "Pod"

_pod_labels(obj) := object.get(obj, ["spec", "template", "metadata", "labels"], {}) if _kind(obj) in _template_kinds

_pod_labels(obj) := object.get(obj, ["spec", "jobTemplate", "spec", "template", "metadata", "labels"], {}) if _kind(obj) == "CronJob"

_pod_labels(obj) := object.get(obj, ["metadata", "labels"], {}) if _kind(obj) == "Pod"

_pod_annotations(obj) := object.get(obj, ["spec", "template", "metadata", "annotations"], {}) if _kind(obj) in _template_kinds

_pod_annotations(obj) := object.get(obj, ["spec", "jobTemplate", "spec", "template", "metadata", "annotations"], {}) if _kind(obj) == "CronJob"

_pod_annotations(obj) := object.get(obj, ["metadata", "annotations"], {}) if _kind(obj) == "Pod"

# One entry per object with a pod spec.
workloads contains {"ref": _ref(obj), "kind": _kind(obj), "spec": spec, "object": obj} if {
	some obj in _objects
	spec := _pod_spec(obj)
	is_object(spec)
}

# One entry per container (init containers included; `init` tells them apart).
containers contains {"ref": ref, "workload": w, "container": c, "init": init} if {
	some w in workloads
	some field, init in {"containers": false, "initContainers": true}
	some c in object.get(w.spec, field, [])
	is_object(c)
	ref := sprintf("container %s of %s", [object.get(c, "name", "unnamed"), w.ref])
}

# A securityContext field as Kubernetes applies it: the container's, else the pod's.
_effective(entry, key) := value if {
	value := object.get(object.get(entry.container, "securityContext", {}), key, null)
	value != null
} else := object.get(object.get(entry.workload.spec, "securityContext", {}), key, null)

_csc(entry, key) := object.get(object.get(entry.container, "securityContext", {}), key, null)

# --- findings ----------------------------------------------------------------------------

_finding(check, message) := {"check": check, "level": lib.level(settings, check), "message": message}

# Non-root: runAsNonRoot must be true (pod or container) and no uid 0 may be set.
findings contains f if {
	some entry in containers
	_effective(entry, "runAsNonRoot") != true
	f := _finding("non_root", sprintf("%s may run as root (set securityContext.runAsNonRoot: true)", [entry.ref]))
}

findings contains f if {
	some entry in containers
	_effective(entry, "runAsUser") == 0
	f := _finding("non_root", sprintf("%s runs as uid 0", [entry.ref]))
}

findings contains f if {
	some entry in containers
	_csc(entry, "allowPrivilegeEscalation") != false
	f := _finding("privilege_escalation", sprintf("%s allows privilege escalation (set allowPrivilegeEscalation: false)", [entry.ref]))
}

findings contains f if {
	some entry in containers
	_csc(entry, "privileged") == true
	f := _finding("privileged", sprintf("%s is privileged", [entry.ref]))
}

findings contains f if {
	some entry in containers
	_csc(entry, "readOnlyRootFilesystem") != true
	f := _finding("read_only_root_filesystem", sprintf("%s has a writable root filesystem (set readOnlyRootFilesystem: true)", [entry.ref]))
}

findings contains f if {
	some entry in containers
	capabilities := object.get(object.get(entry.container, "securityContext", {}), "capabilities", {})
	not "ALL" in object.get(capabilities, "drop", [])
	f := _finding("capabilities", sprintf("%s does not drop ALL capabilities", [entry.ref]))
}

findings contains f if {
	some entry in containers
	capabilities := object.get(object.get(entry.container, "securityContext", {}), "capabilities", {})
	added := object.get(capabilities, "add", [])
	count(added) > 0
	f := _finding("capabilities", sprintf("%s adds capabilities %s", [entry.ref, lib.join(added)]))
}

findings contains f if {
	some entry in containers
	profile := _effective(entry, "seccompProfile")
	not object.get(_object_or_empty(profile), "type", "") in {"RuntimeDefault", "Localhost"}
	f := _finding("seccomp", sprintf("%s has no seccomp profile (set seccompProfile.type: RuntimeDefault)", [entry.ref]))
}

_object_or_empty(x) := x if is_object(x)

else := {}

findings contains f if {
	some w in workloads
	some field in ["hostNetwork", "hostPID", "hostIPC"]
	object.get(w.spec, field, false) == true
	f := _finding("host_namespaces", sprintf("%s uses %s", [w.ref, field]))
}

findings contains f if {
	some w in workloads
	some volume in object.get(w.spec, "volumes", [])
	is_object(object.get(volume, "hostPath", null))
	f := _finding("host_namespaces", sprintf("%s mounts the host path volume %s", [w.ref, object.get(volume, "name", "unnamed")]))
}

findings contains f if {
	some w in workloads
	object.get(w.spec, "automountServiceAccountToken", true) != false
	f := _finding("service_account_token", sprintf("%s mounts a service account token (set automountServiceAccountToken: false)", [w.ref]))
}

# Resources: requests and limits for CPU and memory on every container.
findings contains f if {
	some entry in containers
	some bound in ["requests", "limits"]
	some resource in ["cpu", "memory"]
	value := object.get(object.get(entry.container, "resources", {}), [bound, resource], null)
	not _quantity(value)
	f := _finding("resources", sprintf("%s has no %s %s", [entry.ref, resource, trim_suffix(bound, "s")]))
}

_quantity(value) if is_number(value)

_quantity(value) if {
	is_string(value)
	value != ""
}

# Probes: long-running containers need readiness and liveness probes.
findings contains f if {
	some entry in containers
	entry.init == false
	entry.workload.kind in _long_running_kinds
	some probe in ["readinessProbe", "livenessProbe"]
	not is_object(object.get(entry.container, probe, null))
	f := _finding("probes", sprintf("%s has no %s", [entry.ref, probe]))
}

# Images: never a moving `latest` (explicit or implied), by digest where required, and only
# from approved registries.
findings contains f if {
	some entry in containers
	image := _image(entry)
	_tag(image) == "latest"
	f := _finding("image_tag", sprintf("%s: image %s uses the moving tag latest", [entry.ref, image]))
}

findings contains f if {
	some entry in containers
	image := _image(entry)
	not _tag(image)
	not _has_digest(image)
	f := _finding("image_tag", sprintf("%s: image %s has neither a tag nor a digest (implies latest)", [entry.ref, image]))
}

findings contains f if {
	some entry in containers
	image := _image(entry)
	not _has_digest(image)
	f := _finding("image_digest", sprintf("%s: image %s is not pinned by digest (@sha256:...); %s deploys by digest", [entry.ref, image, env]))
}

findings contains f if {
	some entry in containers
	image := _image(entry)
	not _approved(image)
	f := _finding("registry", sprintf("%s: image %s is not from an approved registry for %s (approved: %s)", [entry.ref, image, env, _approved_list]))
}

_image(entry) := object.get(entry.container, "image", "")

# The repository part without the digest; the tag is what follows ":" in its last segment.
_tag(image) := tag if {
	segments := split(split(image, "@")[0], "/")
	last := segments[count(segments) - 1]
	contains(last, ":")
	tag := split(last, ":")[1]
}

_has_digest(image) if regex.match(`@sha256:[a-f0-9]{64}$`, image)

# An entry approves images under it: "registry.example.com" or "registry.example.com/team"
# approves "registry.example.com/team/model@sha256:..." but never "registry.example.com.evil/...".
_approved(image) if {
	some entry in _registries
	startswith(image, concat("", [trim_suffix(entry, "/"), "/"]))
}

# A pattern is a regular expression the whole registry host must match, e.g.
# `[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com` approves every ECR registry of AWS.
_approved(image) if {
	host := _registry_host(image)
	some pattern in _registry_patterns
	regex.match(concat("", ["^(?:", pattern, ")$"]), host)
}

_registries := object.get(settings, "approved_registries", [])

# Only valid patterns; an invalid one is a deny of its own (above).
_registry_patterns := [pattern |
	some pattern in object.get(settings, "approved_registry_patterns", [])
	_valid_pattern(pattern)
]

# The registry host of an image reference; undefined when the reference names none (an
# implicit Docker Hub image), which no pattern approves: name the registry explicitly.
_registry_host(image) := host if {
	segments := split(image, "/")
	count(segments) > 1
	host := segments[0]
	_is_host(host)
}

_is_host(segment) if contains(segment, ".")

_is_host(segment) if contains(segment, ":")

_is_host(segment) if segment == "localhost"

_approved_list := lib.join(_registries) if {
	count(_registries) > 0
	count(_registry_patterns) == 0
} else := sprintf("%s; patterns: %s", [_none_if_empty(_registries), lib.join(_registry_patterns)]) if {
	count(_registry_patterns) > 0
} else := "none configured: set kubernetes.approved_registries for the environment"

_none_if_empty(xs) := "none" if count(xs) == 0

else := lib.join(xs)

# Labels: every object and every pod template carries the required labels.
findings contains f if {
	some obj in _objects
	labels := object.get(object.get(obj, "metadata", {}), "labels", {})
	missing := {label | some label in settings.required_labels; not _has_label(labels, label)}
	count(missing) > 0
	f := _finding("required_labels", sprintf("%s lacks the required labels %s", [_ref(obj), lib.join(missing)]))
}

findings contains f if {
	some w in workloads
	w.kind != "Pod"
	labels := _pod_labels(w.object)
	missing := {label | some label in settings.required_labels; not _has_label(labels, label)}
	count(missing) > 0
	f := _finding("required_labels", sprintf("the pod template of %s lacks the required labels %s", [w.ref, lib.join(missing)]))
}

_has_label(labels, label) if {
	value := object.get(labels, label, "")
	is_string(value)
	value != ""
}

# Replicas: a Deployment's floor (its HPA's minReplicas, else spec.replicas) meets the minimum.
findings contains f if {
	some obj in _objects
	_kind(obj) == "Deployment"
	floor := _replica_floor(obj)
	floor < settings.min_replicas
	f := _finding("replicas", sprintf(
		"%s runs as few as %s replicas; %s requires at least %s",
		[_ref(obj), format_int(floor, 10), env, format_int(settings.min_replicas, 10)],
	))
}

_replica_floor(deployment) := min(floors) if {
	floors := {m |
		some hpa in _objects
		_kind(hpa) == "HorizontalPodAutoscaler"
		target := object.get(hpa, ["spec", "scaleTargetRef"], {})
		object.get(target, "kind", "") == "Deployment"
		object.get(target, "name", "") == _name(deployment)
		m := object.get(hpa, ["spec", "minReplicas"], 1)
	}
	count(floors) > 0
} else := object.get(deployment, ["spec", "replicas"], 1)

# Kinds the environment requires next to the workload (a PodDisruptionBudget, a NetworkPolicy).
findings contains f if {
	some kind in settings.required_kinds
	count([obj | some obj in _objects; _kind(obj) == kind]) == 0
	count(workloads) > 0
	f := _finding("required_kinds", sprintf("no %s among the rendered objects; %s requires one", [kind, env]))
}

# Model locations handed to a container (MODEL_URI, SERVING_MODEL_URI) must not travel over plain
# http. The message names the scheme only: a URI may carry credentials.
findings contains f if {
	some entry in containers
	variables := object.get(entry.container, "env", [])
	is_array(variables) # regorus fails iterating a string, OPA yields nothing
	some variable in variables
	is_object(variable)
	name := object.get(variable, "name", "")
	name in settings.model_uri_env_names
	value := object.get(variable, "value", "")
	is_string(value)
	some prefix in settings.insecure_uri_prefixes
	startswith(lower(value), lower(prefix))
	f := _finding("model_uri_insecure", sprintf(
		"%s: env %s loads the model over %s; %s requires https, s3://, gs:// or models:/ (insecure: %s)",
		[entry.ref, name, prefix, env, lib.join(settings.insecure_uri_prefixes)],
	))
}

# Metrics: a long-running workload's pods carry the Prometheus scrape annotations, unless a
# ServiceMonitor or PodMonitor (Prometheus Operator) is rendered with it.
findings contains f if {
	some w in workloads
	w.kind in _long_running_kinds
	count(_monitors) == 0
	annotations := _object_or_empty(_pod_annotations(w.object))
	missing := [sprintf("%s: %s", [key, value]) |
		some key, value in settings.scrape_annotations
		object.get(annotations, key, null) != value
	]
	count(missing) > 0
	f := _finding("prometheus_scrape", sprintf(
		"the pod template of %s lacks the annotations %s and no ServiceMonitor or PodMonitor is rendered; %s expects Prometheus to scrape /metrics",
		[w.ref, concat(", ", sort(missing)), env],
	))
}

_monitors := [obj | some obj in _objects; _kind(obj) in {"ServiceMonitor", "PodMonitor"}]
