package ztml.governance_test

import data.ztml.governance

# A manifest that passes every rule in every built-in environment.
good := {
	"apiVersion": "mlifecycle.io/v1",
	"kind": "ModelDeployment",
	"metadata": {"name": "credit"},
	"spec": {
		"model": {
			"name": "credit",
			"version": "4",
			"uri": "models:/credit/4",
			"source": "s3://approved-data-models/1/abc/artifacts/model",
			"run_id": "abc",
			"framework": "sklearn",
			"flavors": ["python_function", "sklearn"],
			"signature": {"inputs": "[{\"type\": \"double\", \"name\": \"income\"}]"},
			"has_input_example": true,
		},
		"metrics": {"accuracy": 0.93, "f1_score": 0.91},
		"fairness": {"demographic_parity_difference": 0.04, "equalized_odds_difference": -0.05},
		"drift": {"income": 0.02, "age": 0.1},
		"dependencies": [
			{"name": "mlflow", "specifier": "==3.17.2", "pinned": true, "requirement": "mlflow==3.17.2"},
			{"name": "scikit-learn", "specifier": "==1.9.1", "pinned": true, "requirement": "scikit-learn==1.9.1"},
			{"name": "skops", "specifier": "===0.16.0", "pinned": true, "requirement": "skops===0.16.0"},
		],
		"data_sources": [
			{"name": "train", "digest": "d1", "source": "s3://approved-data-credit/train.parquet"},
			{"name": "eval", "digest": "d2", "source": "gs://ml-datasets-credit/eval.parquet"},
		],
		"serving": {"version": "3", "metrics": {"accuracy": 0.95, "f1_score": 0.92}},
	},
}

# good with `patch` deep-merged into its spec, or with spec.<key> removed.
with_spec(patch) := object.union(good, {"spec": patch})

without(key) := json.remove(good, [concat("/", ["spec", key])])

with_model(patch) := with_spec({"model": patch})

# with_spec(patch) without a serving version, for metric tests that must not regress.
unserved(patch) := json.remove(with_spec(patch), ["spec/serving"])

with_dependency(dep) := json.patch(good, [{"op": "add", "path": "/spec/dependencies/-", "value": dep}])

decide(manifest, env) := {"allow": allow, "deny": deny, "warn": warn} if {
	document := {"environment": env, "manifest": manifest}
	allow := governance.allow with input as document
	deny := governance.deny with input as document
	warn := governance.warn with input as document
}

# The decision with data.ztml.environments[env].governance deep-merged with `overrides`.
decide_with(manifest, env, overrides) := result if {
	environments := object.union(data.ztml.environments, {env: {"governance": overrides}})
	result := decide(manifest, env) with data.ztml.environments as environments
}

denied_only_by(result, message) if {
	result.allow == false
	result.deny == {message}
}

# --- a good model ---------------------------------------------------------------------------

test_good_manifest_is_allowed_everywhere if {
	every env in ["local", "staging", "production"] {
		decide(good, env) == {"allow": true, "deny": set(), "warn": set()}
	}
}

# --- the envelope and the data ----------------------------------------------------------------

test_unknown_environment_is_denied if {
	denied_only_by(decide(good, "qa"), "no policy data for environment qa (known: local, production, staging)")
}

test_missing_environment_is_denied if {
	result := governance.deny with input as {"manifest": good}
	"policy input has no environment (input.environment must be a string)" in result
	not governance.allow with input as {"manifest": good}
}

test_missing_manifest_is_denied if {
	denied_only_by(decide({}, "production"), "policy input has no manifest (input.manifest.spec.model must be an object)")
}

test_missing_threshold_in_data_is_denied if {
	environments := {"production": {"governance": object.remove(
		data.ztml.environments.production.governance,
		{"min_accuracy"},
	)}}
	result := decide(good, "production") with data.ztml.environments as environments
	denied_only_by(result, "policy data for production lacks governance.min_accuracy")
}

test_no_environment_data_at_all_is_denied if {
	result := decide(good, "production") with data.ztml.environments as {}
	denied_only_by(result, "no policy data for environment production (known: )")
}

test_findings_carry_check_and_level if {
	manifest := unserved({"metrics": {"accuracy": 0.5}})
	found := governance.findings with input as {"environment": "production", "manifest": manifest}
	found == {{
		"check": "metrics",
		"level": "deny",
		"message": "accuracy 0.5000 is below the minimum 0.8500 for production",
	}}
}

# --- metrics ----------------------------------------------------------------------------------

test_low_accuracy_is_denied if {
	result := decide(unserved({"metrics": {"accuracy": 0.71}}), "production")
	denied_only_by(result, "accuracy 0.7100 is below the minimum 0.8500 for production")
}

test_low_f1_is_denied_in_every_environment if {
	every env in ["local", "staging", "production"] {
		result := decide(unserved({"metrics": {"f1_score": 0.79}}), env)
		denied_only_by(result, sprintf("f1_score 0.7900 is below the minimum 0.8000 for %s", [env]))
	}
}

test_metric_at_the_minimum_is_allowed if {
	decide(unserved({"metrics": {"accuracy": 0.85, "f1_score": 0.8}}), "production").allow
}

test_missing_accuracy_is_denied if {
	manifest := json.remove(good, ["spec/metrics/accuracy"])
	result := decide(manifest, "production")
	denied_only_by(result, "no accuracy metric logged for the model; production requires accuracy of at least 0.8500")
}

test_missing_metrics_section_denies_both if {
	result := decide(without("metrics"), "staging")
	result.deny == {
		"no accuracy metric logged for the model; staging requires accuracy of at least 0.8500",
		"no f1_score metric logged for the model; staging requires f1_score of at least 0.8000",
	}
}

test_metric_thresholds_come_from_data if {
	result := decide_with(good, "production", {"min_accuracy": 0.95})
	denied_only_by(result, "accuracy 0.9300 is below the minimum 0.9500 for production")
}

test_extra_minimum_metrics_come_from_data if {
	result := decide_with(good, "staging", {"min_metrics": {"roc_auc": 0.9}})
	denied_only_by(result, "no roc_auc metric logged for the model; staging requires roc_auc of at least 0.9000")
}

# --- fairness ---------------------------------------------------------------------------------

test_missing_fairness_is_denied_in_staging_and_production if {
	every env in ["staging", "production"] {
		result := decide(without("fairness"), env)
		denied_only_by(result, sprintf(
			"no fairness evaluation recorded for the model; %s requires demographic_parity_difference, equalized_odds_difference",
			[env],
		))
	}
}

test_missing_fairness_warns_locally if {
	result := decide(without("fairness"), "local")
	result.allow
	result.warn == {"no fairness evaluation recorded for the model; local requires demographic_parity_difference, equalized_odds_difference"}
}

test_partial_fairness_is_denied if {
	manifest := json.remove(good, ["spec/fairness/equalized_odds_difference"])
	result := decide(manifest, "production")
	denied_only_by(result, "fairness evaluation lacks equalized_odds_difference; production requires it to be at most 0.1000")
}

test_demographic_parity_above_maximum_is_denied if {
	result := decide(with_spec({"fairness": {"demographic_parity_difference": 0.15}}), "production")
	denied_only_by(result, "demographic_parity_difference 0.1500 exceeds the maximum 0.1000 for production")
}

test_negative_equalized_odds_counts_by_magnitude if {
	result := decide(with_spec({"fairness": {"equalized_odds_difference": -0.12}}), "staging")
	denied_only_by(result, "equalized_odds_difference -0.1200 exceeds the maximum 0.1000 for staging")
}

test_fairness_at_the_maximum_is_allowed if {
	decide(with_spec({"fairness": {"demographic_parity_difference": 0.1}}), "production").allow
}

# --- drift ------------------------------------------------------------------------------------

test_drift_above_warning_threshold_warns if {
	result := decide(with_spec({"drift": {"income": 0.2}}), "production")
	result.allow
	result.warn == {"drift income 0.2000 is above the warning threshold 0.1000 for production"}
}

test_drift_above_deny_threshold_is_denied if {
	result := decide(with_spec({"drift": {"age": 0.31}}), "production")
	denied_only_by(result, "drift age 0.3100 exceeds the maximum 0.3000 for production")
	result.warn == set()
}

test_drift_at_deny_threshold_only_warns if {
	result := decide(with_spec({"drift": {"age": 0.3}}), "local")
	result.allow
	result.warn == {"drift age 0.3000 is above the warning threshold 0.1000 for local"}
}

test_missing_drift_is_not_judged if {
	decide(without("drift"), "production").allow
}

# --- framework --------------------------------------------------------------------------------

test_unlisted_framework_is_denied if {
	result := decide(with_model({"framework": "prophet"}), "production")
	denied_only_by(result, "framework prophet is not allowed in production (allowed: catboost, keras, lightgbm, onnx, pytorch, sklearn, tensorflow, xgboost)")
}

test_framework_match_ignores_case if {
	decide(with_model({"framework": "PyTorch"}), "production").allow
}

test_unknown_framework_is_denied if {
	manifest := json.remove(good, ["spec/model/framework"])
	result := decide(manifest, "local")
	denied_only_by(result, "model framework is unknown (no recognised MLflow flavor); local allows: catboost, keras, lightgbm, onnx, pyfunc, pytorch, sklearn, tensorflow, xgboost")
}

test_framework_allowlist_comes_from_data if {
	result := decide_with(good, "production", {"allowed_frameworks": ["pytorch"]})
	denied_only_by(result, "framework sklearn is not allowed in production (allowed: pytorch)")
}

# --- dependencies -----------------------------------------------------------------------------

test_missing_dependencies_are_denied_in_production if {
	result := decide(without("dependencies"), "production")
	denied_only_by(result, "no dependencies recorded for the model (requirements.txt); production requires them")
}

test_missing_dependencies_warn_locally if {
	result := decide(without("dependencies"), "local")
	result.allow
	result.warn == {"no dependencies recorded for the model (requirements.txt); local requires them"}
}

test_unlisted_dependency_is_denied if {
	dep := {"name": "requests", "specifier": "==2.32.0", "requirement": "requests==2.32.0"}
	result := decide(with_dependency(dep), "staging")
	denied_only_by(result, "dependency requests (requests==2.32.0) is not on the dependency allowlist for staging")
}

test_unpinned_dependency_is_denied_in_production if {
	dep := {"name": "numpy", "specifier": ">=1.26", "requirement": "numpy>=1.26"}
	result := decide(with_dependency(dep), "production")
	denied_only_by(result, "dependency numpy is not pinned to an exact version (numpy>=1.26); production requires ==")
}

test_unpinned_dependency_warns_in_staging_and_passes_locally if {
	dep := {"name": "numpy", "specifier": "", "requirement": "numpy"}
	staging := decide(with_dependency(dep), "staging")
	staging.allow
	staging.warn == {"dependency numpy is not pinned to an exact version (numpy); staging requires =="}
	decide(with_dependency(dep), "local") == {"allow": true, "deny": set(), "warn": set()}
}

test_wildcard_and_compound_pins_are_not_exact if {
	every specifier in ["==1.*", "==1.26,<2", "~=1.26", "== 1.26 ; python_version > '3'", "==1.*.0"] {
		dep := {"name": "numpy", "specifier": specifier, "requirement": concat("", ["numpy", specifier])}
		result := decide(with_dependency(dep), "production")
		result.deny == {sprintf("dependency numpy is not pinned to an exact version (numpy%s); production requires ==", [specifier])}
	}
}

test_dependency_allowlist_comes_from_data if {
	result := decide_with(good, "production", {"allowed_dependencies": ["mlflow", "scikit-learn"]})
	denied_only_by(result, "dependency skops (skops===0.16.0) is not on the dependency allowlist for production")
}

test_pinning_can_be_required_everywhere_through_data if {
	dep := {"name": "numpy", "specifier": "", "requirement": "numpy"}
	result := decide_with(with_dependency(dep), "local", {"enforcement": {"dependency_pinning": "deny"}})
	denied_only_by(result, "dependency numpy is not pinned to an exact version (numpy); local requires ==")
}

# --- lineage ----------------------------------------------------------------------------------

test_undeclared_data_sources_are_denied if {
	every manifest in [without("data_sources"), with_spec({"data_sources": []})] {
		result := decide(manifest, "production")
		denied_only_by(result, "no data sources declared for the model (log them with mlflow.log_input); production requires lineage")
	}
}

test_undeclared_data_sources_warn_locally if {
	result := decide(without("data_sources"), "local")
	result.allow
	result.warn == {"no data sources declared for the model (log them with mlflow.log_input); local requires lineage"}
}

test_unapproved_data_source_is_denied if {
	manifest := json.patch(good, [{"op": "add", "path": "/spec/data_sources/-", "value": {"name": "scraped", "source": "s3://random-bucket/x.csv"}}])
	result := decide(manifest, "production")
	denied_only_by(result, "data source scraped (s3://random-bucket/x.csv) is outside the approved prefixes for production: gs://ml-datasets-, s3://approved-data-")
}

test_data_source_without_location_is_denied if {
	manifest := json.patch(good, [{"op": "add", "path": "/spec/data_sources/-", "value": {"digest": "abc"}}])
	result := decide(manifest, "staging")
	denied_only_by(result, "data source unnamed (no location recorded) is outside the approved prefixes for staging: gs://ml-datasets-, s3://approved-data-")
}

test_unapproved_data_source_warns_locally if {
	manifest := json.patch(good, [{"op": "add", "path": "/spec/data_sources/-", "value": {"name": "tmp", "source": "file:///tmp/x.csv"}}])
	result := decide(manifest, "local")
	result.allow
	result.warn == {"data source tmp (file:///tmp/x.csv) is outside the approved prefixes for local: gs://ml-datasets-, s3://approved-data-"}
}

test_approved_prefixes_come_from_data if {
	result := decide_with(good, "production", {"approved_data_prefixes": ["s3://approved-data-"]})
	denied_only_by(result, "data source eval (gs://ml-datasets-credit/eval.parquet) is outside the approved prefixes for production: s3://approved-data-")
}

# --- signature --------------------------------------------------------------------------------

test_missing_signature_is_denied_in_production if {
	manifest := json.remove(good, ["spec/model/signature"])
	denied_only_by(decide(manifest, "production"), "model has no signature; production requires one (log the model with a signature or an input example)")
}

test_missing_signature_warns_in_staging_and_passes_locally if {
	manifest := json.remove(good, ["spec/model/signature"])
	staging := decide(manifest, "staging")
	staging.allow
	staging.warn == {"model has no signature; staging requires one (log the model with a signature or an input example)"}
	decide(manifest, "local") == {"allow": true, "deny": set(), "warn": set()}
}

test_signature_enforcement_can_be_turned_off_through_data if {
	manifest := json.remove(good, ["spec/model/signature"])
	decide_with(manifest, "production", {"enforcement": {"signature": "off"}}).allow
}

# --- regression -------------------------------------------------------------------------------

test_accuracy_regression_is_denied if {
	manifest := with_spec({"serving": {"metrics": {"accuracy": 0.96}}})
	result := decide(manifest, "production")
	denied_only_by(result, "accuracy 0.9300 is 0.0300 below the serving version 3 (0.9600) in production; the maximum drop is 0.0200")
}

test_f1_regression_is_denied if {
	manifest := with_spec({"metrics": {"f1_score": 0.85}, "serving": {"version": "7"}})
	result := decide(manifest, "staging")
	denied_only_by(result, "f1_score 0.8500 is 0.0700 below the serving version 7 (0.9200) in staging; the maximum drop is 0.0200")
}

test_drop_of_exactly_the_maximum_is_allowed if {
	manifest := with_spec({"metrics": {"accuracy": 0.88}, "serving": {"metrics": {"accuracy": 0.9}}})
	decide(manifest, "production").allow
}

test_no_serving_version_means_no_regression_check if {
	decide(without("serving"), "production").allow
}

test_regression_tolerance_comes_from_data if {
	manifest := with_spec({"serving": {"metrics": {"accuracy": 0.96}}})
	decide_with(manifest, "production", {"max_regression": 0.05}).allow
}

# --- insecure locations -----------------------------------------------------------------------

test_http_model_uri_is_denied if {
	result := decide(with_model({"uri": "http://models.example.com/credit/4"}), "local")
	denied_only_by(result, "model uri http://models.example.com/credit/4 uses an insecure scheme; local requires https or models:/ (insecure: http://)")
}

test_http_model_source_is_denied_whatever_the_case if {
	result := decide(with_model({"source": "HTTP://artifacts.example.com/model"}), "production")
	denied_only_by(result, "model source HTTP://artifacts.example.com/model uses an insecure scheme; production requires https or models:/ (insecure: http://)")
}

test_https_model_uri_is_allowed if {
	decide(with_model({"uri": "https://models.example.com/credit/4"}), "production").allow
}

# --- several findings at once -----------------------------------------------------------------

test_every_violation_is_reported if {
	manifest := with_spec({
		"metrics": {"accuracy": 0.5},
		"drift": {"income": 0.5},
		"model": {"uri": "http://x/m"},
	})
	result := decide(manifest, "production")
	result.allow == false
	count(result.deny) == 4
}
