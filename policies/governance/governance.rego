# Model governance: may this model version run in input.environment?
#
# Input:  {"environment": ENV, "manifest": <ModelDeployment (mlifecycle.io/v1) as a dict>}
#         Evidence that was never recorded is absent from the manifest (never 0), so a rule can
#         say "no fairness evaluation" instead of judging a made-up value.
# Data:   data.ztml.environments[ENV].governance holds every threshold and allowlist, and
#         `enforcement` says per check whether a finding denies, warns or is off
#         (policies/data.json ships local, staging and production; ztml.yaml overrides them).
# Output: deny (set of messages), warn (set of messages), allow (true iff deny is empty),
#         findings (every finding with its check id and level, for tooling),
#         checks (every rule with its observed value, threshold and result, for people;
#         see "checks" at the end of this file).
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
	"min_training_samples",
	"recommended_training_samples",
	"max_latency_ratio",
	"vulnerable_dependencies",
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
# The section also carries metadata (evaluation_date, protected_attributes): only numbers are
# judged, because in Rego a string or a list compares greater than any number.
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
	is_number(value)
	abs(value) > maximum
	f := _finding("fairness", sprintf(
		"%s %s exceeds the maximum %s for %s",
		[metric, lib.fmt(value), lib.fmt(maximum), env],
	))
}

# Drift: any drift value above the deny threshold denies, above the warning threshold warns.
# Metadata (reference_dataset, monitored_features, last_evaluated) is not a drift value.
findings contains f if {
	some name, value in spec.drift
	is_number(value)
	value > gov.drift_deny_above
	f := _finding("drift", sprintf(
		"drift %s %s exceeds the maximum %s for %s",
		[name, lib.fmt(value), lib.fmt(gov.drift_deny_above), env],
	))
}

findings contains f if {
	some name, value in spec.drift
	is_number(value)
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
# Anything but a list (a bare requirement string) counts as none recorded: OPA would iterate
# nothing and regorus would fail, so it is never iterated.
_dependencies := deps if {
	deps := spec.dependencies
	is_array(deps)
} else := []

findings contains f if {
	is_object(model)
	not is_array(object.get(spec, "dependencies", null))
	f := _finding("dependencies_missing", sprintf(
		"no dependencies recorded for the model (requirements.txt); %s requires them",
		[env],
	))
}

# Allowlist entries are normalised names (lowercase, "-" separators, as pip normalises them);
# dependency names are normalised here too, inline because this runs for every dependency.
findings contains f if {
	some dep in _dependencies
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
	some dep in _dependencies
	not startswith(trim_space(object.get(dep, "specifier", "")), "==")
	f := _unpinned(dep)
}

# After "==", a version is made of version characters only: trimming them all from both
# ends leaves nothing, while a wildcard, a comma, a space or a marker leaves a residue.
findings contains f if {
	some dep in _dependencies
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

# Lineage: training data must be declared and come from approved locations: a location under
# an approved prefix, or exactly one of the approved source names (a table such as
# `transactions-prod`). A source's own `approved: true` is recorded but decides nothing.
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
	not location in _approved_sources
	f := _finding("lineage_unapproved", sprintf(
		"data source %s is outside the approved prefixes for %s: %s%s",
		[_source_label(source, location), env, lib.join(gov.approved_data_prefixes), _approved_sources_note],
	))
}

_approved_sources := [name | some name in object.get(gov, "approved_data_sources", []); is_string(name)]

_approved_sources_note := "" if {
	count(_approved_sources) == 0
} else := sprintf(" (approved sources: %s)", [lib.join(_approved_sources)])

# "name (location)", or whichever of the two the manifest has.
_source_label(source, location) := sprintf("%s (%s)", [source.name, location]) if {
	is_string(source.name)
	location != ""
} else := source.name if {
	is_string(source.name)
} else := location if {
	location != ""
} else := "(no name or location recorded)"

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
		[metric, lib.fmt(now), lib.fmt(before - now), _serving_version, lib.fmt(before), env, lib.fmt(gov.max_regression)],
	))
}

# A previous version written by hand may carry no version number.
_serving_version := version if {
	version := spec.serving.version
	is_string(version)
} else := "(unnumbered)"

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

# --- provenance: experiment and version ---------------------------------------------------

# _observed(x) renders a manifest value for a message: "absent" when it was never recorded.
_observed(x) := "absent" if x == null

else := json.marshal(x)

_non_empty_string(x) if {
	is_string(x)
	trim_space(x) != ""
}

findings contains f if {
	is_object(model)
	experiment := object.get(model, "experiment_id", null)
	not _non_empty_string(experiment)
	not is_number(experiment)
	f := _finding("experiment_missing", sprintf(
		"model experiment_id is %s; %s requires the MLflow experiment that trained the model (set spec.model.experiment_id)",
		[_observed(experiment), env],
	))
}

findings contains f if {
	is_object(model)
	version := object.get(model, "version", null)
	not _non_empty_string(version)
	f := _finding("model_version_missing", sprintf(
		"model version is %s; %s requires one (set spec.model.version)",
		[_observed(version), env],
	))
}

# Semantic versioning (MAJOR.MINOR.PATCH) is for hand-written manifests: MLflow numbers model
# versions 1, 2, 3, so the built-in environments leave this check off.
findings contains f if {
	version := model.version
	_non_empty_string(version)
	not regex.match(`^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`, version)
	f := _finding("model_version_format", sprintf(
		"model version %s is not semantic versioning (MAJOR.MINOR.PATCH); %s requires it (MLflow versions are integers: set enforcement.model_version_format to off for registry models)",
		[version, env],
	))
}

# Labels the environment requires on the manifest (metadata.labels), e.g. app, version, team.
findings contains f if {
	is_object(model)
	required := [label | some label in object.get(gov, "required_labels", []); is_string(label)]
	labels := _object_or_empty(object.get(input.manifest, ["metadata", "labels"], {}))
	missing := {label | some label in required; not _non_empty_string(object.get(labels, label, null))}
	count(missing) > 0
	f := _finding("required_labels", sprintf(
		"manifest lacks the labels %s; %s requires %s (set metadata.labels)",
		[lib.join(missing), env, lib.join(required)],
	))
}

_object_or_empty(x) := x if is_object(x)

else := {}

# --- inference: resources, autoscaling, latency -------------------------------------------

_resource_paths := [["requests", "cpu"], ["requests", "memory"], ["limits", "cpu"], ["limits", "memory"]]

findings contains f if {
	is_object(model)
	resources := _object_or_empty(object.get(spec, ["inference", "resources"], {}))
	missing := [concat(".", path) | some path in _resource_paths; not _quantity(object.get(resources, path, null))]
	count(missing) > 0
	f := _finding("resources_missing", sprintf(
		"inference resources lack %s; %s requires cpu and memory requests and limits (set spec.inference.resources)",
		[concat(", ", missing), env],
	))
}

_quantity(x) if {
	is_number(x)
	x > 0
}

_quantity(x) if _non_empty_string(x)

findings contains f if {
	is_object(model)
	autoscaling := object.get(spec, ["inference", "autoscaling"], null)
	not _switched_on(autoscaling)
	f := _finding("autoscaling_missing", sprintf(
		"inference autoscaling is %s; %s recommends it (set spec.inference.autoscaling with minReplicas and maxReplicas)",
		[_section_state(autoscaling), env],
	))
}

_non_empty_object(x) if {
	is_object(x)
	count(x) > 0
}

# p99 latency against the serving version's: more than max_latency_ratio times slower warns.
findings contains f if {
	now := spec.inference.latency_p99_ms
	before := spec.serving.latency_p99_ms
	is_number(now)
	is_number(before)
	before > 0
	lib.exceeds(now, before * gov.max_latency_ratio)
	f := _finding("latency_regression", sprintf(
		"p99 latency %s ms is %s times the serving version %s (%s ms) in %s; the maximum ratio is %s (make the model faster or raise governance.max_latency_ratio)",
		[lib.fmt(now), lib.fmt(now / before), _serving_version, lib.fmt(before), env, lib.fmt(gov.max_latency_ratio)],
	))
}

# --- monitoring and explainability ------------------------------------------------------------

findings contains f if {
	is_object(model)
	enabled := object.get(spec, ["monitoring", "enabled"], null)
	enabled != true
	f := _finding("monitoring_disabled", sprintf(
		"monitoring is not enabled (spec.monitoring.enabled is %s); %s requires continuous monitoring (set spec.monitoring.enabled: true)",
		[_observed(enabled), env],
	))
}

# Recommendations: a drift detection and an alerting section that is not switched off.
findings contains f if {
	is_object(model)
	some part, what in {"drift_detection": "drift detection", "alerting": "alerting"}
	section := object.get(spec, ["monitoring", part], null)
	not _switched_on(section)
	f := _finding(concat("_", ["monitoring", part]), sprintf(
		"monitoring has no %s (spec.monitoring.%s is %s); %s recommends it",
		[what, part, _section_state(section), env],
	))
}

# A section counts when it says something and is not switched off (`enabled: false`).
_switched_on(section) if {
	_non_empty_object(section)
	object.get(section, "enabled", true) != false
}

_section_state(section) := "absent" if section == null

else := "disabled" if object.get(_object_or_empty(section), "enabled", true) == false

else := "empty"

findings contains f if {
	is_object(model)
	method := object.get(spec, ["explainability", "method"], null)
	not _non_empty_string(method)
	f := _finding("explainability_missing", sprintf(
		"no explainability method recorded (spec.explainability.method is %s); %s recommends one (e.g. shap, lime, feature importance)",
		[_observed(method), env],
	))
}

# --- training data quantity -------------------------------------------------------------------

# _whole(x) renders a count: "1500000", never "1.5e+06".
_whole(x) := format_int(round(x), 10)

_samples := object.get(spec, ["training", "samples"], null)

findings contains f if {
	is_object(model)
	not is_number(_samples)
	f := _finding("training_samples_missing", sprintf(
		"no training sample count recorded (spec.training.samples is %s); %s recommends at least %s (log the training dataset with mlflow.log_input)",
		[_observed(_samples), env, _whole(gov.recommended_training_samples)],
	))
}

findings contains f if {
	is_number(_samples)
	_samples < gov.min_training_samples
	f := _finding("training_samples", sprintf(
		"training sample count %s is below the minimum %s for %s; train on more data",
		[_whole(_samples), _whole(gov.min_training_samples), env],
	))
}

findings contains f if {
	is_number(_samples)
	_samples >= gov.min_training_samples
	_samples < gov.recommended_training_samples
	f := _finding("training_samples_low", sprintf(
		"training sample count %s is below the recommended %s for %s; consider training on more data",
		[_whole(_samples), _whole(gov.recommended_training_samples), env],
	))
}

# --- known-vulnerable dependency versions -----------------------------------------------------
#
# governance.vulnerable_dependencies lists {"name": PACKAGE, "specifier": RANGE}: RANGE is
# comma-separated clauses (==, !=, <, <=, >, >= and a numeric version), all of which must hold;
# "" means every version. A dependency is judged by the lowest version it admits: its pinned
# version, else the version of its first ==, ===, >= or ~= clause; one without a lower bound
# cannot be judged (the pinning check covers it). Versions compare by their release numbers,
# one by one, padded with zeros ("1.8" is 1.8.0, 1.10 is above 1.9); pre-release, post-release
# and local tags are ignored ("2.0.0rc1" and "2.0.0+cu121" count as 2.0.0).

findings contains f if {
	some dep in _dependencies
	name := _normalised(object.get(dep, "name", ""))
	some advisory in gov.vulnerable_dependencies
	is_object(advisory)
	_normalised(object.get(advisory, "name", "")) == name
	range := object.get(advisory, "specifier", "")
	is_string(range)
	admitted := _admitted(dep, range)
	f := _finding("vulnerable_dependency", sprintf(
		"dependency %s admits %s, a known-vulnerable version (%s%s) in %s; require a fixed version and confirm with a vulnerability scanner",
		[object.get(dep, "requirement", name), admitted, name, range, env],
	))
}

# A malformed entry would silently match nothing: it is a deny, like a missing threshold.
deny contains msg if {
	some advisory in gov.vulnerable_dependencies
	not _valid_advisory(advisory)
	msg := sprintf(
		"policy data for %s: governance.vulnerable_dependencies entry %s needs a name and a specifier of ==, !=, <, <=, >, >= clauses with numeric versions",
		[env, json.marshal(advisory)],
	)
}

_valid_advisory(advisory) if {
	is_object(advisory)
	_non_empty_string(object.get(advisory, "name", null))
	range := object.get(advisory, "specifier", "")
	is_string(range)
	clauses := _clauses(range)
	count([c | some c in clauses; _clause(c)]) == count(clauses)
}

_normalised(name) := replace(replace(lower(name), "_", "-"), ".", "-") if is_string(name)

_admitted(dep, range) := "every version" if range == ""

_admitted(dep, range) := version if {
	range != ""
	version := _lowest_version(dep)
	_in_range(version, range)
}

_lowest_version(dep) := version if {
	version := object.get(dep, "version", null)
	_non_empty_string(version)
} else := version if {
	bounds := [trim_space(trim_left(c, "=>~")) |
		some c in _clauses(object.get(dep, "specifier", ""))
		_lower_bound(c)
	]
	version := bounds[0]
}

_lower_bound(clause) if startswith(clause, "==")

_lower_bound(clause) if startswith(clause, ">=")

_lower_bound(clause) if startswith(clause, "~=")

_clauses(range) := [clause |
	some part in split(range, ",")
	clause := trim_space(part)
	clause != ""
]

_clause(clause) := {"op": op, "version": version} if {
	# Longest operators first, so that "<=1.0" is not read as "<" and "=1.0". The list is
	# inline: regorus, evaluating a whole package spread over several modules, saw a rule
	# referenced from here as undefined (OPA does not).
	op := [o | some o in ["===", "==", "!=", "<=", ">=", "<", ">"]; startswith(clause, o)][0]
	version := trim_space(substring(clause, count(op), count(clause) - count(op)))
	regex.match(`^[0-9]+(\.[0-9]+)*$`, version)
}

_in_range(version, range) if {
	clauses := [c | some text in _clauses(range); c := _clause(text)]
	count(clauses) > 0
	admitted := _release(version)
	failing := [c | some c in clauses; not _holds(_compare(admitted, _release(c.version)), c.op)]
	count(failing) == 0
}

_holds(cmp, "===") if cmp == 0

_holds(cmp, "==") if cmp == 0

_holds(cmp, "!=") if cmp != 0

_holds(cmp, "<") if cmp < 0

_holds(cmp, "<=") if cmp <= 0

_holds(cmp, ">") if cmp > 0

_holds(cmp, ">=") if cmp >= 0

# _release(version) is the leading release numbers: "2.0.0rc1" -> [2, 0, 0], "1.08" -> [1, 8].
# Undefined for a version without leading numbers or with an epoch ("1!2.0").
_release(version) := [to_number(_without_leading_zeros(part)) | some part in split(release, ".")] if {
	not contains(version, "!")
	release := regex.find_n(`^[0-9]+(\.[0-9]+)*`, trim_space(version), 1)[0]
}

# to_number rejects "08" in OPA (it parses JSON numbers), so zeros are trimmed first.
_without_leading_zeros(digits) := trimmed if {
	trimmed := trim_left(digits, "0")
	trimmed != ""
} else := "0"

# _compare(a, b) is -1, 0 or 1 for two release number lists, the shorter padded with zeros.
_compare(a, b) := 0 if {
	count([i | some i in _positions(a, b); _at(a, i) != _at(b, i)]) == 0
} else := sign if {
	first := min([i | some i in _positions(a, b); _at(a, i) != _at(b, i)])
	sign := {true: -1, false: 1}[_at(a, first) < _at(b, first)]
}

_positions(a, b) := numbers.range(0, max([count(a), count(b)]) - 1)

_at(xs, i) := x if {
	x := xs[i]
} else := 0

# --- requirements: can the target install and load the model? ----------------------------
# input.requirements is computed in Python before any build (mlflow_ztml/requirements.py):
# {"runtime", "target": "image" | "local", "status", "sources", "verified",
#  "findings": [{"check", "message", "requirement", "package"}]}. Each finding's message
# already names the fix; this rule only decides its level, per environment, from
# data.ztml.environments[ENV].requirements.enforcement (missing or unknown: deny):
#   requirements_unsatisfiable      the build's indexes cannot serve a requirement
#   requirements_flavor_package     the flavor loads with a package the target lacks
#   requirements_index_unreachable  an index did not answer: requirements left unverified
#   requirements_unchecked          the check was disabled or could not run
# An input without `requirements` (a caller that did not check) has nothing to judge here.
_requirements_checks := {
	"requirements_unsatisfiable",
	"requirements_flavor_package",
	"requirements_index_unreachable",
	"requirements_unchecked",
}

findings contains f if {
	some item in object.get(input, ["requirements", "findings"], [])
	check := _requirements_check(item)
	settings := object.get(data.ztml.environments[env], "requirements", {})
	f := {"check": check, "level": lib.level(settings, check), "message": _requirements_message(item)}
}

# An unknown check id is judged as the strictest known one, never dropped.
_requirements_check(item) := item.check if {
	item.check in _requirements_checks
} else := "requirements_unsatisfiable"

_requirements_message(item) := item.message if {
	is_string(item.message)
} else := "the requirements check reported a finding without a message"

# --- checks: every rule as a person reads it --------------------------------------------------
#
# What was checked, what was observed, against which threshold, and the result: for the audit
# run's report.html, `ztml gate` and `make demo`; the decision itself is deny/warn/allow.
# In this file, not a module of its own: regorus evaluates a package spread over several
# modules wrongly (tests saw allow undefined).
#
# Output: checks, a set of {"id", "title", "observed", "threshold", "result"} (all strings),
#         result "pass" | "warn" | "deny" | "off" (off: the environment does not enforce it,
#         or enforces it but the rule found something it is told to ignore).
#         One check per metric minimum, fairness bound and regression metric; one per other
#         rule. A check's result agrees with the decision: it is the worst level among the
#         findings of the check's enforcement ids (checks_test.rego asserts it).
#
# Engines are asked for deny/warn/allow to decide and for checks only when a person will read
# them (mlflow_ztml/gate.py), so checks cost a decision nothing.

# _worst(ids): the result of a check decided by the findings of its enforcement ids.
_worst(ids) := "deny" if {
	some f in findings
	f.check in ids
	f.level == "deny"
} else := "warn" if {
	some f in findings
	f.check in ids
	f.level == "warn"
} else := "off" if {
	some f in findings
	f.check in ids
} else := "off" if {
	count([id | some id in ids; lib.level(gov, id) != "off"]) == 0
} else := "pass"

_check(id, title, observed, threshold, result) := {
	"id": id,
	"title": title,
	"observed": observed,
	"threshold": threshold,
	"result": result,
}

# _shown(x) renders an observed value: numbers with four decimals, "absent" when never recorded.
_shown(x) := lib.fmt(x) if is_number(x)

else := "absent" if x == null

else := x if is_string(x)

else := json.marshal(x)

_names(xs) := "none" if count(xs) == 0

else := lib.join(xs)

_count(n, one, many) := sprintf("%d %s", [n, one]) if n == 1

else := sprintf("%d %s", [n, many])

# --- metrics, fairness, drift -------------------------------------------------------------

checks contains c if {
	is_object(_metrics)
	some name, minimum in minimums
	value := object.get(_metrics, name, null)
	c := _check(
		concat(".", ["metrics", name]),
		sprintf("minimum %s", [name]),
		_shown(value),
		sprintf(">= %s", [lib.fmt(minimum)]),
		_metric_result(value, minimum),
	)
}

_metric_result(value, minimum) := lib.level(gov, "metrics_missing") if not is_number(value)

else := lib.level(gov, "metrics") if value < minimum

else := "off" if lib.level(gov, "metrics") == "off"

else := "pass"

checks contains c if {
	is_object(model)
	some metric, maximum in gov.max_fairness
	value := object.get(_object_or_empty(object.get(spec, "fairness", null)), metric, null)
	c := _check(
		concat(".", ["fairness", metric]),
		sprintf("fairness %s", [metric]),
		_fairness_observed(value),
		sprintf("|x| <= %s", [lib.fmt(maximum)]),
		_fairness_result(value, maximum),
	)
}

_fairness_observed(value) := _shown(value) if is_number(value)

else := "no fairness evaluation" if not spec.fairness

else := "absent"

_fairness_result(value, maximum) := lib.level(gov, "fairness_missing") if not is_number(value)

else := lib.level(gov, "fairness") if abs(value) > maximum

else := "off" if lib.level(gov, "fairness") == "off"

else := "pass"

_drift_values := {name: value | some name, value in _object_or_empty(object.get(spec, "drift", null)); is_number(value)}

checks contains c if {
	is_object(model)
	c := _check(
		"drift",
		"feature drift",
		_drift_observed,
		sprintf("warn above %s, deny above %s", [lib.fmt(gov.drift_warn_above), lib.fmt(gov.drift_deny_above)]),
		_worst({"drift", "drift_warning"}),
	)
}

_drift_observed := "none recorded" if {
	count(_drift_values) == 0
} else := sprintf("max %s %s (%s)", [name, lib.fmt(top), _count(count(_drift_values), "feature", "features")]) if {
	top := max([value | some value in _drift_values])
	name := sort([n | some n, v in _drift_values; v == top])[0]
}

# --- model, dependencies, lineage ---------------------------------------------------------

checks contains c if {
	is_object(model)
	c := _check(
		"framework",
		"framework allowed",
		_shown(object.get(model, "framework", null)),
		sprintf("one of %s", [lib.join(gov.allowed_frameworks)]),
		_worst({"framework"}),
	)
}

checks contains c if {
	is_object(model)
	c := _check(
		"dependencies",
		"dependencies recorded",
		_dependencies_observed,
		"requirements recorded",
		_worst({"dependencies_missing"}),
	)
}

_dependencies_observed := _count(count(_dependencies), "dependency", "dependencies") if {
	is_array(object.get(spec, "dependencies", null))
} else := "none recorded"

checks contains c if {
	is_object(model)
	outside := {object.get(dep, "name", "") |
		some dep in _dependencies
		not _normalised(object.get(dep, "name", "")) in gov.allowed_dependencies
	}
	c := _check(
		"dependency_allowlist",
		"dependencies on the allowlist",
		_outside_observed(outside),
		_count(count(gov.allowed_dependencies), "allowed package", "allowed packages"),
		_worst({"dependency_allowlist"}),
	)
}

_outside_observed(outside) := sprintf("all %d allowed", [count(_dependencies)]) if {
	count(outside) == 0
} else := sprintf("not allowed: %s", [lib.join(outside)])

checks contains c if {
	is_object(model)
	unpinned := {object.get(f, "message", "") | some f in findings; f.check == "dependency_pinning"}
	c := _check(
		"dependency_pinning",
		"dependencies pinned",
		sprintf("%d of %d pinned", [count(_dependencies) - count(unpinned), count(_dependencies)]),
		"==VERSION",
		_worst({"dependency_pinning"}),
	)
}

checks contains c if {
	is_object(model)
	hits := {f.message | some f in findings; f.check == "vulnerable_dependency"}
	c := _check(
		"vulnerable_dependency",
		"no known-vulnerable versions",
		_vulnerable_observed(count(hits)),
		_count(count(gov.vulnerable_dependencies), "advisory", "advisories"),
		_worst({"vulnerable_dependency"}),
	)
}

_vulnerable_observed(0) := "none admitted"

_vulnerable_observed(n) := _count(n, "dependency admits one", "dependencies admit one") if n > 0

checks contains c if {
	is_object(model)
	sources := object.get(spec, "data_sources", [])
	outside := {f.message | some f in findings; f.check == "lineage_unapproved"}
	c := _check(
		"lineage",
		"training data lineage approved",
		_lineage_observed(count(sources), count(outside)),
		sprintf("under %s%s", [lib.join(gov.approved_data_prefixes), _approved_sources_note]),
		_worst({"lineage_missing", "lineage_unapproved"}),
	)
}

_lineage_observed(0, _) := "no data sources"

_lineage_observed(n, 0) := sprintf("%s, all approved", [_count(n, "source", "sources")]) if n > 0

_lineage_observed(n, bad) := sprintf("%s, %d outside", [_count(n, "source", "sources"), bad]) if {
	n > 0
	bad > 0
}

checks contains c if {
	is_object(model)
	c := _check(
		"signature",
		"model signature",
		_present(object.get(model, "signature", null)),
		"present",
		_worst({"signature"}),
	)
}

_present(x) := "absent" if {
	x == null
} else := "absent" if {
	x == false
} else := "present"

checks contains c if {
	is_object(model)
	c := _check(
		"insecure_uri",
		"model artifacts over a secure scheme",
		_shown(object.get(model, "uri", null)),
		sprintf("not %s", [lib.join(gov.insecure_uri_prefixes)]),
		_worst({"insecure_uri"}),
	)
}

# --- regression and latency against the serving version -----------------------------------

checks contains c if {
	is_object(model)
	some metric in gov.regression_metrics
	before := object.get(spec, ["serving", "metrics", metric], null)
	now := object.get(_metrics, metric, null)
	c := _check(
		concat(".", ["regression", metric]),
		sprintf("%s drop against the serving version", [metric]),
		_regression_observed(before, now),
		sprintf("drop <= %s", [lib.fmt(gov.max_regression)]),
		_regression_result(before, now),
	)
}

_regression_observed(before, now) := sprintf("%s (%s -> %s, serving v%s)", [lib.fmt(before - now), lib.fmt(before), lib.fmt(now), _serving_version]) if {
	is_number(before)
	is_number(now)
} else := "no serving version to compare" if {
	not is_number(before)
} else := "not comparable (metric absent)"

_regression_result(before, now) := lib.level(gov, "regression") if {
	is_number(before)
	is_number(now)
	lib.exceeds(before - now, gov.max_regression)
} else := "off" if {
	lib.level(gov, "regression") == "off"
} else := "pass"

checks contains c if {
	is_object(model)
	now := object.get(spec, ["inference", "latency_p99_ms"], null)
	before := object.get(spec, ["serving", "latency_p99_ms"], null)
	c := _check(
		"latency_regression",
		"p99 latency against the serving version",
		_latency_observed(before, now),
		sprintf("<= %s times the serving version", [lib.fmt(gov.max_latency_ratio)]),
		_worst({"latency_regression"}),
	)
}

_latency_observed(before, now) := sprintf("%s times (%s ms -> %s ms)", [lib.fmt(now / before), lib.fmt(before), lib.fmt(now)]) if {
	is_number(before)
	is_number(now)
	before > 0
} else := "nothing to compare"

# --- provenance ---------------------------------------------------------------------------

checks contains c if {
	is_object(model)
	c := _check(
		"experiment",
		"MLflow experiment recorded",
		_shown(object.get(model, "experiment_id", null)),
		"recorded",
		_worst({"experiment_missing"}),
	)
}

checks contains c if {
	is_object(model)
	c := _check(
		"model_version",
		"model version recorded",
		_shown(object.get(model, "version", null)),
		"recorded",
		_worst({"model_version_missing"}),
	)
}

checks contains c if {
	is_object(model)
	c := _check(
		"model_version_format",
		"semantic version",
		_shown(object.get(model, "version", null)),
		"MAJOR.MINOR.PATCH",
		_worst({"model_version_format"}),
	)
}

checks contains c if {
	is_object(model)
	required := [label | some label in object.get(gov, "required_labels", []); is_string(label)]
	labels := _object_or_empty(object.get(input.manifest, ["metadata", "labels"], {}))
	present := [label | some label in required; _non_empty_string(object.get(labels, label, null))]
	c := _check(
		"required_labels",
		"manifest labels",
		sprintf("%d of %d present", [count(present), count(required)]),
		_names(required),
		_worst({"required_labels"}),
	)
}

# --- inference, monitoring, explainability, training --------------------------------------

checks contains c if {
	is_object(model)
	resources := _object_or_empty(object.get(spec, ["inference", "resources"], {}))
	missing := [concat(".", path) | some path in _resource_paths; not _quantity(object.get(resources, path, null))]
	c := _check(
		"resources",
		"inference resources",
		_missing_observed(missing),
		"cpu and memory requests and limits",
		_worst({"resources_missing"}),
	)
}

_missing_observed(missing) := "all set" if count(missing) == 0

else := sprintf("missing %s", [concat(", ", missing)])

checks contains c if {
	is_object(model)
	c := _check(
		"autoscaling",
		"autoscaling",
		_section_observed(object.get(spec, ["inference", "autoscaling"], null)),
		"on",
		_worst({"autoscaling_missing"}),
	)
}

_section_observed(section) := "on" if _switched_on(section)

else := _section_state(section)

checks contains c if {
	is_object(model)
	c := _check(
		"monitoring",
		"monitoring enabled",
		_shown(object.get(spec, ["monitoring", "enabled"], null)),
		"true",
		_worst({"monitoring_disabled"}),
	)
}

checks contains c if {
	is_object(model)
	some part, what in {"drift_detection": "drift detection", "alerting": "alerting"}
	id := concat("_", ["monitoring", part])
	c := _check(
		id,
		sprintf("monitoring %s", [what]),
		_section_observed(object.get(spec, ["monitoring", part], null)),
		"on",
		_worst({id}),
	)
}

checks contains c if {
	is_object(model)
	c := _check(
		"explainability",
		"explainability method",
		_shown(object.get(spec, ["explainability", "method"], null)),
		"recorded",
		_worst({"explainability_missing"}),
	)
}

checks contains c if {
	is_object(model)
	c := _check(
		"training_samples",
		"training samples",
		_samples_observed,
		sprintf(">= %s (recommended %s)", [_whole(gov.min_training_samples), _whole(gov.recommended_training_samples)]),
		_worst({"training_samples_missing", "training_samples", "training_samples_low"}),
	)
}

_samples_observed := _whole(_samples) if is_number(_samples)

else := "absent"

# --- requirements (judged only when the caller checked them) -------------------------------

checks contains c if {
	is_object(model)
	report := input.requirements
	is_object(report)
	problems := {item.message | some item in object.get(report, "findings", []); is_object(item)}
	c := _check(
		"requirements",
		"installable and loadable where it runs",
		_requirements_observed(report, count(problems)),
		sprintf("installs on %s", [_shown(object.get(report, "target", null))]),
		_requirements_result,
	)
}

_requirements_observed(report, 0) := sprintf("%s, no problems", [_shown(object.get(report, "status", null))])

_requirements_observed(report, n) := sprintf("%s, %s", [_shown(object.get(report, "status", null)), _count(n, "problem", "problems")]) if n > 0

# Requirements findings take their level from the requirements settings, not governance's.
_requirements_result := "deny" if {
	some f in findings
	f.check in _requirements_checks
	f.level == "deny"
} else := "warn" if {
	some f in findings
	f.check in _requirements_checks
	f.level == "warn"
} else := "off" if {
	some f in findings
	f.check in _requirements_checks
} else := "pass"
