package ztml.deployment_test

import data.ztml.deployment as policy

image := "registry.example.com/models/iris@sha256:0000000000000000000000000000000000000000000000000000000000000000"

labels := {
	"app.kubernetes.io/name": "ztml-inference",
	"app.kubernetes.io/instance": "iris",
	"app.kubernetes.io/managed-by": "Helm",
	"ztml.io/model": "iris",
	"ztml.io/model-version": "3",
	"ztml.io/environment": "production",
}

# Prometheus finds the pods by these annotations (kubernetes_sd_configs).
scrape := {"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}

container := {
	"name": "server",
	"image": image,
	"resources": {
		"requests": {"cpu": "500m", "memory": "512Mi"},
		"limits": {"cpu": "500m", "memory": "512Mi"},
	},
	"readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
	"livenessProbe": {"httpGet": {"path": "/health", "port": "http"}},
	"securityContext": {
		"allowPrivilegeEscalation": false,
		"readOnlyRootFilesystem": true,
		"capabilities": {"drop": ["ALL"]},
	},
}

pod_spec := {
	"automountServiceAccountToken": false,
	"securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
	"containers": [container],
}

workload := {
	"apiVersion": "apps/v1",
	"kind": "Deployment",
	"metadata": {"name": "iris", "labels": labels},
	"spec": {"template": {"metadata": {"labels": labels, "annotations": scrape}, "spec": pod_spec}},
}

# Note: object.union merges nested objects, so tests replace keys with `replaced` instead.

hpa := {
	"apiVersion": "autoscaling/v2",
	"kind": "HorizontalPodAutoscaler",
	"metadata": {"name": "iris", "labels": labels},
	"spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris"}, "minReplicas": 3, "maxReplicas": 10},
}

pdb := {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "iris", "labels": labels}}

netpol := {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "iris", "labels": labels}}

good := [workload, hpa, pdb, netpol]

# The registry the tests approve, in every environment.
approved := {env: {"deployment": object.union(data.ztml.environments[env].deployment, {"approved_registries": ["registry.example.com/models"]})} |
	some env in ["local", "staging", "production"]
}

decide(objects, env) := {"allow": allow, "deny": deny, "warn": warn} if {
	document := {"environment": env, "objects": objects}
	environments := object.union(data.ztml.environments, approved)
	allow := policy.allow with input as document with data.ztml.environments as environments
	deny := policy.deny with input as document with data.ztml.environments as environments
	warn := policy.warn with input as document with data.ztml.environments as environments
}

# `good` with the keys of `patch` replaced in the deployment's container or pod spec.
replaced(obj, patch) := object.union(object.remove(obj, object.keys(patch)), patch)

with_pod(patch) := [
	{
		"apiVersion": "apps/v1",
		"kind": "Deployment",
		"metadata": {"name": "iris", "labels": labels},
		"spec": {"template": {"metadata": {"labels": labels, "annotations": scrape}, "spec": replaced(pod_spec, patch)}},
	},
	hpa, pdb, netpol,
]

with_container(patch) := with_pod({"containers": [replaced(container, patch)]})

denied_only_by(result, message) if {
	result.allow == false
	result.deny == {message}
}

# --- good objects ----------------------------------------------------------------------------

test_good_objects_are_allowed_everywhere if {
	every env in ["local", "staging", "production"] {
		decide(good, env) == {"allow": true, "deny": set(), "warn": set()}
	}
}

# --- the envelope and the data ----------------------------------------------------------------

test_unknown_environment_is_denied if {
	result := decide(good, "qa")
	result.allow == false
	"no policy data for environment qa (known: local, production, staging)" in result.deny
}

test_missing_environment_is_denied if {
	not policy.allow with input as {"objects": good}
}

test_missing_objects_are_denied if {
	denied_only_by(
		decide(null, "production"),
		"policy input has no objects (input.objects must be a list of Kubernetes objects)",
	)
}

test_objects_without_workload_are_denied if {
	denied_only_by(
		decide([pdb, netpol], "production"),
		"no workload among the rendered objects (expected a Deployment or another pod template)",
	)
}

test_missing_settings_are_denied if {
	document := {"environment": "production", "objects": good}
	deny := policy.deny with input as document with data.ztml.environments.production as {"deployment": {}}
	"policy data for production lacks deployment.approved_registries" in deny
	"policy data for production lacks deployment.min_replicas" in deny
}

# --- security context ------------------------------------------------------------------------

test_non_root_is_required if {
	result := decide(with_pod({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}), "production")
	denied_only_by(result, "container server of Deployment iris may run as root (set securityContext.runAsNonRoot: true)")
}

test_container_security_context_overrides_the_pod if {
	result := decide(with_container({"securityContext": object.union(container.securityContext, {"runAsNonRoot": false})}), "local")
	denied_only_by(result, "container server of Deployment iris may run as root (set securityContext.runAsNonRoot: true)")
}

test_uid_zero_is_denied if {
	result := decide(with_container({"securityContext": object.union(container.securityContext, {"runAsUser": 0})}), "production")
	denied_only_by(result, "container server of Deployment iris runs as uid 0")
}

test_privilege_escalation_is_denied if {
	result := decide(with_container({"securityContext": object.union(container.securityContext, {"allowPrivilegeEscalation": true})}), "production")
	denied_only_by(result, "container server of Deployment iris allows privilege escalation (set allowPrivilegeEscalation: false)")
}

test_privileged_is_denied if {
	result := decide(with_container({"securityContext": object.union(container.securityContext, {"privileged": true})}), "production")
	denied_only_by(result, "container server of Deployment iris is privileged")
}

test_writable_root_filesystem_is_denied if {
	result := decide(with_container({"securityContext": object.union(container.securityContext, {"readOnlyRootFilesystem": false})}), "production")
	denied_only_by(result, "container server of Deployment iris has a writable root filesystem (set readOnlyRootFilesystem: true)")
}

test_capabilities_must_be_dropped if {
	result := decide(with_container({"securityContext": object.union(container.securityContext, {"capabilities": {"drop": ["NET_RAW"], "add": ["NET_ADMIN"]}})}), "production")
	result.deny == {
		"container server of Deployment iris does not drop ALL capabilities",
		"container server of Deployment iris adds capabilities NET_ADMIN",
	}
}

test_seccomp_profile_is_required if {
	result := decide(with_pod({"securityContext": {"runAsNonRoot": true}}), "production")
	denied_only_by(result, "container server of Deployment iris has no seccomp profile (set seccompProfile.type: RuntimeDefault)")
}

test_host_namespaces_and_host_paths_are_denied if {
	result := decide(with_pod({"hostNetwork": true, "volumes": [{"name": "docker", "hostPath": {"path": "/var/run"}}]}), "production")
	result.deny == {"Deployment iris uses hostNetwork", "Deployment iris mounts the host path volume docker"}
}

test_service_account_token_is_a_warning_locally if {
	result := decide(with_pod({"automountServiceAccountToken": true}), "local")
	result.allow == true
	result.warn == {"Deployment iris mounts a service account token (set automountServiceAccountToken: false)"}
	denied_only_by(decide(with_pod({"automountServiceAccountToken": true}), "production"), "Deployment iris mounts a service account token (set automountServiceAccountToken: false)")
}

# --- resources and probes ----------------------------------------------------------------------

test_limits_are_required if {
	result := decide(with_container({"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}), "production")
	result.deny == {"container server of Deployment iris has no cpu limit", "container server of Deployment iris has no memory limit"}
}

test_init_containers_are_checked_too if {
	init := replaced(container, {"name": "fetch", "resources": {}})
	result := decide(with_pod({"initContainers": [init]}), "production")
	"container fetch of Deployment iris has no memory request" in result.deny

	# init containers need no probes
	not "container fetch of Deployment iris has no readinessProbe" in result.deny
}

test_probes_are_required_for_long_running_containers if {
	probeless := json.remove(container, ["readinessProbe", "livenessProbe"])
	objects := [object.union(workload, {"spec": {"template": {"spec": {"containers": [probeless]}}}}), hpa, pdb, netpol]
	result := decide(objects, "production")
	result.deny == {"container server of Deployment iris has no readinessProbe", "container server of Deployment iris has no livenessProbe"}
}

test_a_test_pod_needs_no_probes if {
	probeless := json.remove(container, ["readinessProbe", "livenessProbe"])
	pod := {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "iris-test", "labels": labels}, "spec": object.union(pod_spec, {"containers": [probeless]})}
	decide(array.concat(good, [pod]), "production") == {"allow": true, "deny": set(), "warn": set()}
}

# --- images --------------------------------------------------------------------------------------

test_latest_tag_is_denied if {
	result := decide(with_container({"image": "registry.example.com/models/iris:latest"}), "local")
	denied_only_by(result, "container server of Deployment iris: image registry.example.com/models/iris:latest uses the moving tag latest")
}

test_missing_tag_implies_latest if {
	result := decide(with_container({"image": "registry.example.com/models/iris"}), "local")
	denied_only_by(result, "container server of Deployment iris: image registry.example.com/models/iris has neither a tag nor a digest (implies latest)")
}

test_registry_port_is_not_a_tag if {
	result := decide(with_container({"image": "localhost:5000/iris"}), "local")
	"container server of Deployment iris: image localhost:5000/iris has neither a tag nor a digest (implies latest)" in result.deny
}

test_digest_is_required_in_production_and_a_warning_in_staging if {
	tagged := with_container({"image": "registry.example.com/models/iris:3"})
	denied_only_by(decide(tagged, "production"), "container server of Deployment iris: image registry.example.com/models/iris:3 is not pinned by digest (@sha256:...); production deploys by digest")
	staging := decide(tagged, "staging")
	staging.allow == true
	staging.warn == {"container server of Deployment iris: image registry.example.com/models/iris:3 is not pinned by digest (@sha256:...); staging deploys by digest"}
	decide(tagged, "local").allow == true
}

test_unapproved_registry_is_denied if {
	other := "registry.example.com.evil.io/models/iris@sha256:0000000000000000000000000000000000000000000000000000000000000000"
	result := decide(with_container({"image": other}), "production")
	denied_only_by(result, sprintf("container server of Deployment iris: image %s is not from an approved registry for production (approved: registry.example.com/models)", [other]))
}

test_no_approved_registry_configured_denies if {
	document := {"environment": "production", "objects": good}
	deny := policy.deny with input as document
	some message in deny
	contains(message, "approved: none configured: set kubernetes.approved_registries for the environment")
}

# --- labels, replicas, required kinds ----------------------------------------------------------

test_required_labels_are_checked_on_objects_and_pod_templates if {
	unlabelled := object.remove(labels, ["ztml.io/model"])
	unlabelled_workload := {
		"apiVersion": "apps/v1",
		"kind": "Deployment",
		"metadata": {"name": "iris", "labels": unlabelled},
		"spec": {"template": {"metadata": {"labels": unlabelled}, "spec": pod_spec}},
	}
	objects := [unlabelled_workload, hpa, pdb, netpol]
	result := decide(objects, "production")
	result.deny == {
		"Deployment iris lacks the required labels ztml.io/model",
		"the pod template of Deployment iris lacks the required labels ztml.io/model",
	}
}

test_replica_floor_comes_from_the_hpa if {
	low := object.union(hpa, {"spec": {"minReplicas": 1}})
	denied_only_by(decide([workload, low, pdb, netpol], "production"), "Deployment iris runs as few as 1 replicas; production requires at least 2")
	decide([workload, low, pdb, netpol], "staging").allow == true
}

test_replica_floor_without_hpa_is_spec_replicas if {
	fixed := object.union(workload, {"spec": {"replicas": 3}})
	decide([fixed, pdb, netpol], "production").allow == true
	denied_only_by(decide([workload, pdb, netpol], "production"), "Deployment iris runs as few as 1 replicas; production requires at least 2")
}

test_required_kinds_deny_in_production_and_warn_in_staging if {
	denied_only_by(decide([workload, hpa, netpol], "production"), "no PodDisruptionBudget among the rendered objects; production requires one")
	staging := decide([workload, hpa], "staging")
	staging.allow == true
	staging.warn == {
		"no PodDisruptionBudget among the rendered objects; staging requires one",
		"no NetworkPolicy among the rendered objects; staging requires one",
	}
	decide([workload, hpa], "local").allow == true
}

test_enforcement_off_silences_a_check if {
	environments := object.union(data.ztml.environments, {"production": {"deployment": object.union(approved.production.deployment, {"enforcement": {"image_digest": "off"}})}})
	document := {"environment": "production", "objects": with_container({"image": "registry.example.com/models/iris:3"})}
	policy.allow with input as document with data.ztml.environments as environments
}

# The decision with the approved test registry and `overrides` merged into env's deployment data.
decide_with(objects, env, overrides) := result if {
	environments := object.union(data.ztml.environments, {env: {"deployment": object.union(approved[env].deployment, overrides)}})
	document := {"environment": env, "objects": objects}
	allow := policy.allow with input as document with data.ztml.environments as environments
	deny := policy.deny with input as document with data.ztml.environments as environments
	warn := policy.warn with input as document with data.ztml.environments as environments
	result := {"allow": allow, "deny": deny, "warn": warn}
}

# --- the model location -------------------------------------------------------------------------

test_model_uri_over_http_is_denied if {
	objects := with_container({"env": [{"name": "MODEL_URI", "value": "http://models.example.com/iris/3"}]})
	every env in ["local", "staging", "production"] {
		denied_only_by(decide(objects, env), sprintf("container server of Deployment iris: env MODEL_URI loads the model over http://; %s requires https, s3://, gs:// or models:/ (insecure: http://)", [env]))
	}
}

test_serving_model_uri_over_http_is_denied_whatever_the_case if {
	objects := with_container({"env": [{"name": "SERVING_MODEL_URI", "value": "HTTP://user:secret@models.example.com/iris"}]})
	result := decide(objects, "production")
	denied_only_by(result, "container server of Deployment iris: env SERVING_MODEL_URI loads the model over http://; production requires https, s3://, gs:// or models:/ (insecure: http://)")

	# the value (which may carry credentials) never reaches a message
	every message in result.deny {
		not contains(message, "secret")
	}
}

test_secure_model_uris_and_other_variables_are_allowed if {
	variables := [
		{"name": "MODEL_URI", "value": "https://models.example.com/iris/3"},
		{"name": "SERVING_MODEL_URI", "value": "/opt/model"},
		{"name": "MODEL_URI_FALLBACK", "value": "http://x"},
		{"name": "MODEL_URI", "valueFrom": {"secretKeyRef": {"name": "m", "key": "uri"}}},
	]
	decide(with_container({"env": variables}), "production") == {"allow": true, "deny": set(), "warn": set()}
}

test_model_uri_variables_are_data if {
	objects := with_container({"env": [{"name": "MLFLOW_MODEL", "value": "http://x/m"}]})
	decide(objects, "production").allow
	not decide_with(objects, "production", {"model_uri_env_names": ["MLFLOW_MODEL"]}).allow
}

# --- metrics --------------------------------------------------------------------------------------

unannotated := [object.union(workload, {"spec": {"template": {"metadata": {"annotations": {"prometheus.io/scrape": "false"}}}}}), hpa, pdb, netpol]

test_missing_scrape_annotation_warns if {
	every env in ["staging", "production"] {
		result := decide(unannotated, env)
		result.allow
		result.warn == {sprintf("the pod template of Deployment iris lacks the annotations prometheus.io/scrape: true and no ServiceMonitor or PodMonitor is rendered; %s expects Prometheus to scrape /metrics", [env])}
	}
	decide(unannotated, "local") == {"allow": true, "deny": set(), "warn": set()}
}

test_a_service_monitor_replaces_the_scrape_annotation if {
	monitor := {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "iris", "labels": labels}}
	decide(array.concat(unannotated, [monitor]), "production") == {"allow": true, "deny": set(), "warn": set()}
}

# --- registries by pattern ------------------------------------------------------------------------

ecr_pattern := `[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com`

digest := "@sha256:0000000000000000000000000000000000000000000000000000000000000000"

test_a_registry_is_approved_by_pattern if {
	image := concat("", ["123456789012.dkr.ecr.eu-west-1.amazonaws.com/models/iris", digest])
	not decide(with_container({"image": image}), "production").allow
	decide_with(with_container({"image": image}), "production", {"approved_registry_patterns": [ecr_pattern]}).allow
}

test_a_pattern_matches_the_whole_registry_host if {
	every image in [
		concat("", ["123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.io/iris", digest]),
		concat("", ["evil.io/123456789012.dkr.ecr.eu-west-1.amazonaws.com/iris", digest]),
	] {
		result := decide_with(with_container({"image": image}), "production", {"approved_registry_patterns": [ecr_pattern]})
		denied_only_by(result, sprintf("container server of Deployment iris: image %s is not from an approved registry for production (approved: registry.example.com/models; patterns: %s)", [image, ecr_pattern]))
	}
}

test_a_pattern_never_approves_an_image_without_a_registry_host if {
	image := concat("", ["python", digest])
	result := decide_with(with_container({"image": image}), "production", {"approved_registry_patterns": [`.*`]})
	not result.allow
}

test_an_invalid_registry_pattern_is_denied if {
	result := decide_with(good, "production", {"approved_registry_patterns": ["[a-"]})
	denied_only_by(result, "policy data for production: deployment.approved_registry_patterns entry \"[a-\" is not a valid regular expression")
}

# --- the published labels ---------------------------------------------------------------------------

test_the_published_labels_can_be_required if {
	published := {"required_labels": ["app", "version", "team"]}
	result := decide_with(good, "production", published)
	"Deployment iris lacks the required labels app, team, version" in result.deny
	"the pod template of Deployment iris lacks the required labels app, team, version" in result.deny
	labelled := object.union(labels, {"app": "iris", "version": "3", "team": "risk"})
	objects := [
		{
			"apiVersion": "apps/v1",
			"kind": "Deployment",
			"metadata": {"name": "iris", "labels": labelled},
			"spec": {"template": {"metadata": {"labels": labelled, "annotations": scrape}, "spec": pod_spec}},
		},
		object.union(hpa, {"metadata": {"labels": labelled}}),
		object.union(pdb, {"metadata": {"labels": labelled}}),
		object.union(netpol, {"metadata": {"labels": labelled}}),
	]
	decide_with(objects, "production", published) == {"allow": true, "deny": set(), "warn": set()}
}
