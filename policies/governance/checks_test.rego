package ztml.governance_checks_test

# ztml.governance.checks: every rule with its observed value, threshold and result, agreeing
# with the decision. Manifests come from governance_test.rego.

import data.ztml.governance
import data.ztml.governance_test as t

checks(manifest, env) := {c.id: c | some c in governance.checks with input as {"environment": env, "manifest": manifest}}

every_rule := {
	"autoscaling", "dependencies", "dependency_allowlist", "dependency_pinning", "drift",
	"experiment", "explainability", "fairness.demographic_parity_difference",
	"fairness.equalized_odds_difference", "framework", "insecure_uri", "latency_regression",
	"lineage", "metrics.accuracy", "metrics.f1_score", "model_version", "model_version_format",
	"monitoring", "monitoring_alerting", "monitoring_drift_detection", "regression.accuracy",
	"regression.f1_score", "required_labels", "resources", "signature", "training_samples",
	"vulnerable_dependency",
}

test_a_good_manifest_lists_every_rule_as_passed if {
	every env in ["local", "staging", "production"] {
		found := checks(t.good, env)
		object.keys(found) == every_rule
		every id, c in found {
			c.result in {"pass", "off"}
			c.id == id
			every key in ["title", "observed", "threshold", "result"] {
				is_string(c[key])
				c[key] != ""
			}
		}
	}
}

test_a_passed_metric_shows_value_and_minimum if {
	checks(t.good, "production")["metrics.accuracy"] == {
		"id": "metrics.accuracy",
		"title": "minimum accuracy",
		"observed": "0.9300",
		"threshold": ">= 0.8500",
		"result": "pass",
	}
}

test_a_low_metric_is_a_deny_with_its_value if {
	found := checks(t.unserved({"metrics": {"accuracy": 0.71}}), "production")
	found["metrics.accuracy"].observed == "0.7100"
	found["metrics.accuracy"].result == "deny"
	found["metrics.f1_score"].result == "pass"
	found["regression.accuracy"].observed == "no serving version to compare"
}

test_a_missing_metric_is_absent if {
	manifest := json.remove(t.unserved({}), ["spec/metrics/f1_score"])
	found := checks(manifest, "production")
	found["metrics.f1_score"].observed == "absent"
	found["metrics.f1_score"].result == "deny"
}

test_drift_between_thresholds_warns_with_the_largest_value if {
	found := checks(t.with_spec({"drift": {"income": 0.2, "age": 0.05}}), "production")
	found.drift.observed == "max income 0.2000 (2 features)"
	found.drift.threshold == "warn above 0.1000, deny above 0.3000"
	found.drift.result == "warn"
}

test_no_fairness_evaluation_is_said_so if {
	found := checks(t.without("fairness"), "production")
	found["fairness.demographic_parity_difference"].observed == "no fairness evaluation"
	found["fairness.demographic_parity_difference"].result == "deny"
}

test_a_regression_shows_the_drop if {
	found := checks(t.with_spec({"metrics": {"accuracy": 0.9}}), "production")
	found["regression.accuracy"].observed == "0.0500 (0.9500 -> 0.9000, serving v3)"
	found["regression.accuracy"].result == "deny"
}

test_enforcement_levels_come_from_the_environment if {
	manifest := json.remove(t.good, ["spec/model/signature"])
	checks(manifest, "production").signature.result == "deny"
	checks(manifest, "staging").signature.result == "warn"
	checks(manifest, "production").signature.observed == "absent"
}

test_a_disallowed_dependency_is_named if {
	dep := {"name": "leftpad", "specifier": "==1.0", "pinned": true, "requirement": "leftpad==1.0"}
	found := checks(t.with_dependency(dep), "production")
	found.dependency_allowlist.observed == "not allowed: leftpad"
	found.dependency_allowlist.result == "deny"
}

# The results agree with the decision: a manifest is allowed exactly when no check denies,
# and warned exactly when some check warns.
test_results_agree_with_the_decision if {
	manifests := [
		t.good,
		t.unserved({"metrics": {"accuracy": 0.5}}),
		t.with_spec({"drift": {"income": 0.2}}),
		t.with_spec({"drift": {"income": 0.9}, "training": {"samples": 500}}),
		t.without("monitoring"),
		t.without("dependencies"),
		t.without("data_sources"),
	]
	every manifest in manifests {
		every env in ["local", "staging", "production"] {
			decision := t.decide(manifest, env)
			results := {c.result | some c in checks(manifest, env)}
			decision.allow == not_in("deny", results)
			(count(decision.warn) == 0) == not_in("warn", results)
		}
	}
}

not_in(x, xs) := false if x in xs

else := true

test_requirements_are_a_check_when_given if {
	report := {"runtime": "docker", "target": "image", "status": "checked", "findings": [{
		"check": "requirements_flavor_package",
		"message": "model flavor sklearn loads with skops, which the model's requirements do not include",
	}]}
	document := {"environment": "production", "manifest": t.good, "requirements": report}
	found := {c.id: c | some c in governance.checks with input as document}
	found.requirements.observed == "checked, 1 problem"
	found.requirements.threshold == "installs on image"
	found.requirements.result == "deny"
	not checks(t.good, "production").requirements
}
