# Model governance: may this model version run in input.environment?
#
# Input:  {"environment": ENV, "manifest": <ModelDeployment (mlifecycle.io/v1) as a dict>}
#         Evidence that was never recorded is absent from the manifest (never 0), so a rule can
#         say "no fairness evaluation" instead of judging a made-up value.
# Data:   data.ztml.environments[ENV].governance holds every threshold and allowlist, and
#         `enforcement` says per check whether a finding denies, warns or is off
#         (policies/data.json ships local, staging and production; ztml.yaml overrides them).
# Output: deny (set of messages), warn (set of messages), allow (true iff deny is empty),
#         findings (every finding with its check id and level, for tooling).
#
# Messages name the metric, the value, the threshold and the environment, e.g.
# "accuracy 0.7100 is below the minimum 0.8500 for production".
package ztml.governance

import data.ztml.lib

env := input.environment

gov := data.ztml.environments[env].governance

spec := input.manifest.spec

model := spec.model

# A note for rule authors: write `not is_number(object.get(obj, key, null))`, not
# `not is_number(obj[key])`; OPA and regorus disagree on a builtin over an undefined ref in a
# negation (tests/policy cross-checks both engines).

# Settings every environment's governance data must define. A missing one is a deny: a rule
# that cannot read its threshold would otherwise pass silently.
required_settings := {
	"min_accuracy",
	"min_f1_score",
	"max_fairness",
	"drift_warn_above",
	"drift_deny_above",
	"allowed_frameworks",
	"allowed_dependencies",
	"approved_data_prefixes",
	"max_regression",
	"regression_metrics",
	"insecure_uri_prefixes",
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

deny contains "policy input has no manifest (input.manifest.spec.model must be an object)" if {
	not is_object(object.get(input, ["manifest", "spec", "model"], null))
}

deny contains msg if {
	settings := object.get(data.ztml.environments[env], "governance", {})
	some key in required_settings - {name | some name, value in settings; value != null}
	msg := sprintf("policy data for %s lacks governance.%s", [env, key])
}

# Only data.ztml.environments: referring to data.ztml itself would include this package.
_known_environments := names if {
	names := lib.join(object.keys(data.ztml.environments))
} else := "none"

# --- findings: one per violated rule, enforced as data.enforcement says ------------------

_finding(check, message) := {"check": check, "level": lib.level(gov, check), "message": message}

# Between the warning and the deny threshold drift is a warning by definition.
_warning(check, message) := {"check": check, "level": "warn", "message": message}

# Minimum metrics: accuracy and F1 always, plus any extra `min_metrics` the data names.
minimums := object.union(
	object.get(gov, "min_metrics", {}),
	{"accuracy": gov.min_accuracy, "f1_score": gov.min_f1_score},
)

# Guarded, and checked with is_object(_metrics) below: regorus (unlike OPA) answers
# object.get on an undefined object with the default instead of undefined.
_metrics := metrics if {
	is_object(model)
	metrics := object.get(spec, "metrics", {})
}

findings contains f if {
	is_object(_metrics)
	some name, minimum in minimums
	not is_number(object.get(_metrics, name, null))
	f := _finding("metrics_missing", sprintf(
		"no %s metric logged for the model; %s requires %s of at least %s",
		[name, env, name, lib.fmt(minimum)],
	))
}

findings contains f if {
	some name, minimum in minimums
	value := _metrics[name]
	value < minimum
	f := _finding("metrics", sprintf(
		"%s %s is below the minimum %s for %s",
		[name, lib.fmt(value), lib.fmt(minimum), env],
	))
}

# Fairness: an evaluation must exist and each configured difference must stay within bounds.
findings contains f if {
	is_object(model)
	not spec.fairness
	f := _finding("fairness_missing", sprintf(
		"no fairness evaluation recorded for the model; %s requires %s",
		[env, lib.join(object.keys(gov.max_fairness))],
	))
}

findings contains f if {
	spec.fairness
	some metric, maximum in gov.max_fairness
	not is_number(object.get(spec.fairness, metric, null))
	f := _finding("fairness_missing", sprintf(
		"fairness evaluation lacks %s; %s requires it to be at most %s",
		[metric, env, lib.fmt(maximum)],
	))
}

findings contains f if {
	some metric, maximum in gov.max_fairness
	value := spec.fairness[metric]
	abs(value) > maximum
	f := _finding("fairness", sprintf(
		"%s %s exceeds the maximum %s for %s",
		[metric, lib.fmt(value), lib.fmt(maximum), env],
	))
}

# Drift: any drift value above the deny threshold denies, above the warning threshold warns.
findings contains f if {
	some name, value in spec.drift
	value > gov.drift_deny_above
	f := _finding("drift", sprintf(
		"drift %s %s exceeds the maximum %s for %s",
		[name, lib.fmt(value), lib.fmt(gov.drift_deny_above), env],
	))
}

findings contains f if {
	some name, value in spec.drift
	value > gov.drift_warn_above
	value <= gov.drift_deny_above
	f := _warning("drift_warning", sprintf(
		"drift %s %s is above the warning threshold %s for %s",
		[name, lib.fmt(value), lib.fmt(gov.drift_warn_above), env],
	))
}

# Framework allowlist: MLflow flavor names (sklearn, pytorch, ...), lowercase in the data.
findings contains f if {
	framework := model.framework
	not lower(framework) in gov.allowed_frameworks
	f := _finding("framework", sprintf(
		"framework %s is not allowed in %s (allowed: %s)",
		[framework, env, lib.join(gov.allowed_frameworks)],
	))
}

findings contains f if {
	is_object(model)
	not model.framework
	f := _finding("framework", sprintf(
		"model framework is unknown (no recognised MLflow flavor); %s allows: %s",
		[env, lib.join(gov.allowed_frameworks)],
	))
}

# Dependencies: recorded, on the allowlist, and pinned exactly where enforcement says so.
findings contains f if {
	is_object(model)
	not spec.dependencies
	f := _finding("dependencies_missing", sprintf(
		"no dependencies recorded for the model (requirements.txt); %s requires them",
		[env],
	))
}

# Allowlist entries are normalised names (lowercase, "-" separators, as pip normalises them);
# dependency names are normalised here too, inline because this runs for every dependency.
findings contains f if {
	some dep in spec.dependencies
	name := object.get(dep, "name", "")
	not replace(replace(lower(name), "_", "-"), ".", "-") in gov.allowed_dependencies
	f := _finding("dependency_allowlist", sprintf(
		"dependency %s (%s) is not on the dependency allowlist for %s",
		[name, object.get(dep, "requirement", name), env],
	))
}

# An exact pin is `==VERSION` (or `===VERSION`); a range, a wildcard (`==1.*`) or a list
# (`==1.0,<2`) is not. Judged from the specifier itself, never from a `pinned` flag alone.
findings contains f if {
	some dep in spec.dependencies
	not startswith(trim_space(object.get(dep, "specifier", "")), "==")
	f := _unpinned(dep)
}

# After "==", a version is made of version characters only: trimming them all from both
# ends leaves nothing, while a wildcard, a comma, a space or a marker leaves a residue.
findings contains f if {
	some dep in spec.dependencies
	specifier := trim_space(object.get(dep, "specifier", ""))
	startswith(specifier, "==")
	trim(trim_left(specifier, "="), _version_characters) != ""
	f := _unpinned(dep)
}

_version_characters := "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.+!_-"

_unpinned(dep) := _finding("dependency_pinning", sprintf(
	"dependency %s is not pinned to an exact version (%s); %s requires ==",
	[name, object.get(dep, "requirement", name), env],
)) if {
	name := object.get(dep, "name", "")
}

# Lineage: training data must be declared and come from approved locations.
findings contains f if {
	is_object(model)
	count(object.get(spec, "data_sources", [])) == 0
	f := _finding("lineage_missing", sprintf(
		"no data sources declared for the model (log them with mlflow.log_input); %s requires lineage",
		[env],
	))
}

findings contains f if {
	some source in spec.data_sources
	location := object.get(source, "source", "")
	not lib.has_prefix(location, gov.approved_data_prefixes)
	f := _finding("lineage_unapproved", sprintf(
		"data source %s (%s) is outside the approved prefixes for %s: %s",
		[_source_name(source), _or(location, "no location recorded"), env, lib.join(gov.approved_data_prefixes)],
	))
}

_source_name(source) := source.name if is_string(source.name)
else := "unnamed"

_or(value, fallback) := value if value != ""
else := fallback

# Signature: serving validates requests against it.
findings contains f if {
	is_object(model)
	not model.signature
	f := _finding("signature", sprintf(
		"model has no signature; %s requires one (log the model with a signature or an input example)",
		[env],
	))
}

# Regression against the version serving in this environment now.
findings contains f if {
	some metric in gov.regression_metrics
	before := spec.serving.metrics[metric]
	now := _metrics[metric]
	lib.exceeds(before - now, gov.max_regression)
	f := _finding("regression", sprintf(
		"%s %s is %s below the serving version %s (%s) in %s; the maximum drop is %s",
		[metric, lib.fmt(now), lib.fmt(before - now), spec.serving.version, lib.fmt(before), env, lib.fmt(gov.max_regression)],
	))
}

# Model artifacts must not travel over plain http.
findings contains f if {
	some field in ["uri", "source"]
	location := model[field]
	lib.has_prefix(lower(location), gov.insecure_uri_prefixes)
	f := _finding("insecure_uri", sprintf(
		"model %s %s uses an insecure scheme; %s requires https or models:/ (insecure: %s)",
		[field, location, env, lib.join(gov.insecure_uri_prefixes)],
	))
}
