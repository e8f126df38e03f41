package ztml.governance_test

import data.ztml.governance

# A manifest that passes every rule in every built-in environment.
good := {
	"apiVersion": "mlifecycle.io/v1",
	"kind": "ModelDeployment",
	"metadata": {"name": "credit", "labels": {"app": "credit", "version": "4", "team": "risk"}},
	"spec": {
		"model": {
			"name": "credit",
			"version": "4",
			"uri": "models:/credit/4",
			"source": "s3://approved-data-models/1/abc/artifacts/model",
			"run_id": "abc",
			"experiment_id": "12",
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
		"serving": {"version": "3", "metrics": {"accuracy": 0.95, "f1_score": 0.92}, "latency_p99_ms": 30},
		"training": {"samples": 25000},
		"inference": {
			"replicas": 2,
			"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
			"autoscaling": {"minReplicas": 2, "maxReplicas": 6},
			"latency_p99_ms": 40,
		},
		"monitoring": {
			"enabled": true,
			"drift_detection": {"enabled": true, "threshold": 0.3},
			"alerting": {"enabled": true, "channels": ["pagerduty"]},
		},
		"explainability": {"method": "shap"},
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
	{f | some f in found; f.level != "off"} == {{
		"check": "metrics",
		"level": "deny",
		"message": "accuracy 0.5000 is below the minimum 0.8500 for production",
	}}
}

# A check switched off still shows up in findings (level "off"), never in deny or warn.
test_findings_keep_checks_that_are_off if {
	found := governance.findings with input as {"environment": "production", "manifest": good}
	found == {{
		"check": "model_version_format",
		"level": "off",
		"message": "model version 4 is not semantic versioning (MAJOR.MINOR.PATCH); production requires it (MLflow versions are integers: set enforcement.model_version_format to off for registry models)",
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
	denied_only_by(result, "data source (no name or location recorded) is outside the approved prefixes for staging: gs://ml-datasets-, s3://approved-data-")
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

# --- sections carry metadata: only numbers are judged ------------------------------------------

test_fairness_metadata_is_not_judged if {
	manifest := with_spec({"fairness": {"evaluation_date": "2025-01-02", "protected_attributes": ["gender", "age_group"]}})
	every env in ["local", "staging", "production"] {
		decide(manifest, env) == {"allow": true, "deny": set(), "warn": set()}
	}
}

test_drift_metadata_is_not_judged if {
	manifest := with_spec({"drift": {"reference_dataset": "2024-12-baseline", "monitored_features": ["amount"], "last_evaluated": "2025-01-02"}})
	every env in ["local", "staging", "production"] {
		decide(manifest, env) == {"allow": true, "deny": set(), "warn": set()}
	}
}

test_published_drift_score_is_judged if {
	result := decide(with_spec({"drift": {"score": 0.45, "reference_dataset": "2024-06-baseline"}}), "staging")
	denied_only_by(result, "drift score 0.4500 exceeds the maximum 0.3000 for staging")
}

# --- provenance: experiment and version -------------------------------------------------------

test_missing_experiment_id_is_denied_in_staging_and_production if {
	manifest := json.remove(good, ["spec/model/experiment_id"])
	every env in ["staging", "production"] {
		denied_only_by(decide(manifest, env), sprintf(
			"model experiment_id is absent; %s requires the MLflow experiment that trained the model (set spec.model.experiment_id)",
			[env],
		))
	}
	local := decide(manifest, "local")
	local.allow
	local.warn == {"model experiment_id is absent; local requires the MLflow experiment that trained the model (set spec.model.experiment_id)"}
}

test_empty_experiment_id_is_denied if {
	result := decide(with_model({"experiment_id": " "}), "production")
	denied_only_by(result, "model experiment_id is \" \"; production requires the MLflow experiment that trained the model (set spec.model.experiment_id)")
}

test_missing_model_version_is_denied if {
	result := decide(json.remove(good, ["spec/model/version"]), "production")
	denied_only_by(result, "model version is absent; production requires one (set spec.model.version)")
}

test_semantic_versioning_applies_only_when_the_environment_asks if {
	# MLflow versions are integers: off in every built-in environment
	every env in ["local", "staging", "production"] {
		decide(good, env).allow
	}
	strict := {"enforcement": {"model_version_format": "deny"}}
	denied_only_by(decide_with(good, "staging", strict), "model version 4 is not semantic versioning (MAJOR.MINOR.PATCH); staging requires it (MLflow versions are integers: set enforcement.model_version_format to off for registry models)")
	every version in ["2.1.0", "1.0.0-rc.1+build.5"] {
		decide_with(with_model({"version": version}), "staging", strict).allow
	}
	not decide_with(with_model({"version": "2.1"}), "staging", strict).allow
}

test_required_labels_are_data if {
	unlabelled := json.remove(good, ["metadata/labels/team"])

	# the published app, version and team are listed, but enforcement is off by default
	decide(unlabelled, "production").allow
	result := decide_with(unlabelled, "production", {"enforcement": {"required_labels": "deny"}})
	denied_only_by(result, "manifest lacks the labels team; production requires app, team, version (set metadata.labels)")
	custom := decide_with(good, "staging", {"required_labels": ["owner"], "enforcement": {"required_labels": "warn"}})
	custom.allow
	custom.warn == {"manifest lacks the labels owner; staging requires owner (set metadata.labels)"}
}

# --- inference: resources, autoscaling, latency ---------------------------------------------------

test_missing_resources_are_denied if {
	result := decide(json.remove(good, ["spec/inference/resources"]), "production")
	denied_only_by(result, "inference resources lack requests.cpu, requests.memory, limits.cpu, limits.memory; production requires cpu and memory requests and limits (set spec.inference.resources)")
}

test_missing_memory_limit_is_denied if {
	result := decide(json.remove(good, ["spec/inference/resources/limits/memory"]), "staging")
	denied_only_by(result, "inference resources lack limits.memory; staging requires cpu and memory requests and limits (set spec.inference.resources)")
}

test_missing_resources_warn_locally if {
	result := decide(json.remove(good, ["spec/inference/resources/requests"]), "local")
	result.allow
	result.warn == {"inference resources lack requests.cpu, requests.memory; local requires cpu and memory requests and limits (set spec.inference.resources)"}
}

test_missing_autoscaling_warns if {
	manifest := json.remove(good, ["spec/inference/autoscaling"])
	result := decide(manifest, "staging")
	result.allow
	result.warn == {"inference autoscaling is absent; staging recommends it (set spec.inference.autoscaling with minReplicas and maxReplicas)"}
	decide(manifest, "local") == {"allow": true, "deny": set(), "warn": set()}
}

test_latency_regression_warns if {
	result := decide(with_spec({"inference": {"latency_p99_ms": 60}}), "production")
	result.allow
	result.warn == {"p99 latency 60.0000 ms is 2.0000 times the serving version 3 (30.0000 ms) in production; the maximum ratio is 1.5000 (make the model faster or raise governance.max_latency_ratio)"}
}

test_latency_at_the_ratio_is_allowed if {
	decide(with_spec({"inference": {"latency_p99_ms": 45}}), "production") == {"allow": true, "deny": set(), "warn": set()}
}

test_latency_ratio_comes_from_data if {
	result := decide_with(with_spec({"inference": {"latency_p99_ms": 60}}), "production", {"max_latency_ratio": 2.5})
	result == {"allow": true, "deny": set(), "warn": set()}
}

test_latency_without_a_serving_latency_is_not_judged if {
	manifest := json.remove(with_spec({"inference": {"latency_p99_ms": 600}}), ["spec/serving/latency_p99_ms"])
	decide(manifest, "production") == {"allow": true, "deny": set(), "warn": set()}
}

# --- monitoring and explainability --------------------------------------------------------------

test_disabled_monitoring_is_denied if {
	result := decide(with_spec({"monitoring": {"enabled": false}}), "production")
	denied_only_by(result, "monitoring is not enabled (spec.monitoring.enabled is false); production requires continuous monitoring (set spec.monitoring.enabled: true)")
}

test_missing_monitoring_is_denied_with_its_recommendations if {
	result := decide(without("monitoring"), "staging")
	denied_only_by(result, "monitoring is not enabled (spec.monitoring.enabled is absent); staging requires continuous monitoring (set spec.monitoring.enabled: true)")
	result.warn == {
		"monitoring has no drift detection (spec.monitoring.drift_detection is absent); staging recommends it",
		"monitoring has no alerting (spec.monitoring.alerting is absent); staging recommends it",
	}
}

test_missing_monitoring_warns_locally if {
	result := decide(without("monitoring"), "local")
	result.allow
	result.warn == {"monitoring is not enabled (spec.monitoring.enabled is absent); local requires continuous monitoring (set spec.monitoring.enabled: true)"}
}

test_switched_off_drift_detection_and_alerting_warn if {
	manifest := json.patch(good, [
		{"op": "replace", "path": "/spec/monitoring/drift_detection", "value": {"enabled": false}},
		{"op": "replace", "path": "/spec/monitoring/alerting", "value": {}},
	])
	result := decide(manifest, "production")
	result.allow
	result.warn == {
		"monitoring has no drift detection (spec.monitoring.drift_detection is disabled); production recommends it",
		"monitoring has no alerting (spec.monitoring.alerting is empty); production recommends it",
	}
}

test_explainability_is_recommended if {
	manifest := without("explainability")
	result := decide(manifest, "staging")
	result.allow
	result.warn == {"no explainability method recorded (spec.explainability.method is absent); staging recommends one (e.g. shap, lime, feature importance)"}
	decide(manifest, "local") == {"allow": true, "deny": set(), "warn": set()}
}

# --- training data quantity ---------------------------------------------------------------------

test_too_few_training_samples_are_denied if {
	manifest := with_spec({"training": {"samples": 60}})
	every env in ["staging", "production"] {
		denied_only_by(decide(manifest, env), sprintf("training sample count 60 is below the minimum 100 for %s; train on more data", [env]))
	}
	local := decide(manifest, "local")
	local.allow
	local.warn == {"training sample count 60 is below the minimum 100 for local; train on more data"}
}

test_few_training_samples_warn if {
	manifest := with_spec({"training": {"samples": 999}})
	result := decide(manifest, "staging")
	result.allow
	result.warn == {"training sample count 999 is below the recommended 1000 for staging; consider training on more data"}
	decide(with_spec({"training": {"samples": 1000}}), "staging").warn == set()
	decide(with_spec({"training": {"samples": 100}}), "production").allow
}

test_missing_training_samples_warn if {
	result := decide(without("training"), "production")
	result.allow
	result.warn == {"no training sample count recorded (spec.training.samples is absent); production recommends at least 1000 (log the training dataset with mlflow.log_input)"}
	decide(with_spec({"training": {"samples": "many"}}), "production").warn == {"no training sample count recorded (spec.training.samples is \"many\"); production recommends at least 1000 (log the training dataset with mlflow.log_input)"}
}

test_training_sample_thresholds_come_from_data if {
	result := decide_with(with_spec({"training": {"samples": 1500000}}), "production", {"min_training_samples": 2000000})
	denied_only_by(result, "training sample count 1500000 is below the minimum 2000000 for production; train on more data")
}

# --- known-vulnerable dependency versions -------------------------------------------------------

vulnerable(range) := {"vulnerable_dependencies": [{"name": "scikit-learn", "specifier": range}]}

test_known_vulnerable_pin_warns if {
	dep := {"name": "torch", "specifier": "==1.8.1", "pinned": true, "version": "1.8.1", "requirement": "torch==1.8.1"}
	result := decide(with_dependency(dep), "production")
	result.allow
	result.warn == {"dependency torch==1.8.1 admits 1.8.1, a known-vulnerable version (torch==1.8.1) in production; require a fixed version and confirm with a vulnerability scanner"}
}

test_a_lower_bound_admitting_a_vulnerable_version_warns if {
	dep := {"name": "NumPy", "specifier": ">=1.18", "requirement": "NumPy>=1.18"}
	result := decide(with_dependency(dep), "local")
	result.warn == {"dependency NumPy>=1.18 admits 1.18, a known-vulnerable version (numpy==1.18.0) in local; require a fixed version and confirm with a vulnerability scanner"}
}

test_local_version_labels_compare_by_release if {
	dep := {"name": "torch", "specifier": "==1.8.0+cu111", "requirement": "torch==1.8.0+cu111"}
	count(decide(with_dependency(dep), "local").warn) == 1
}

test_safe_versions_do_not_warn if {
	every requirement in ["torch>=2.0.0", "torch==1.8.2", "torch~=1.9", "torch", "torch<2", "tensorflow==2.3.1", "numpy==1.18.0.1"] {
		parts := regex.find_n(`^[a-z]+`, requirement, 1)
		dep := {"name": parts[0], "specifier": substring(requirement, count(parts[0]), -1), "requirement": requirement}
		decide(with_dependency(dep), "local") == {"allow": true, "deny": set(), "warn": set()}
	}
}

test_vulnerable_ranges_are_data_and_compare_numerically if {
	# good pins scikit-learn==1.9.1
	hit := decide_with(good, "production", vulnerable(">=1.5, <1.9.2"))
	hit.allow
	hit.warn == {"dependency scikit-learn==1.9.1 admits 1.9.1, a known-vulnerable version (scikit-learn>=1.5, <1.9.2) in production; require a fixed version and confirm with a vulnerability scanner"}

	# 1.9.1 is below 1.10 as versions, though not as strings
	every range in ["<1.9.1", ">=1.10", "!=1.9.1", "==1.9", ">1.9.1", "<=1.9.0"] {
		decide_with(good, "production", vulnerable(range)).warn == set()
	}
	every range in ["<=1.9.1", ">1.9", "==1.9.1", "!=1.9.0", ">=1.9.1,<1.10"] {
		count(decide_with(good, "production", vulnerable(range)).warn) == 1
	}
}

test_an_empty_range_means_every_version if {
	result := decide_with(good, "production", {"vulnerable_dependencies": [{"name": "Skops", "specifier": ""}]})
	result.warn == {"dependency skops===0.16.0 admits every version, a known-vulnerable version (skops) in production; require a fixed version and confirm with a vulnerability scanner"}
}

test_malformed_vulnerability_data_is_denied if {
	every entry in [{"name": "torch", "specifier": "~=1.8"}, {"name": "torch", "specifier": "==1.8.*"}, {"specifier": "==1.0"}] {
		result := decide_with(good, "production", {"vulnerable_dependencies": [entry]})
		denied_only_by(result, sprintf(
			"policy data for production: governance.vulnerable_dependencies entry %s needs a name and a specifier of ==, !=, <, <=, >, >= clauses with numeric versions",
			[json.marshal(entry)],
		))
	}
}

# --- the published allowlists and data sources --------------------------------------------------

test_published_packages_are_allowed if {
	every name in ["fastapi", "uvicorn", "pydantic", "onnx", "onnxruntime", "torch", "torchvision", "torchaudio", "sklearn", "keras", "catboost"] {
		dep := {"name": name, "specifier": "==1.0.0", "requirement": concat("", [name, "==1.0.0"])}
		decide(with_dependency(dep), "production").allow
	}
}

published_source(location) := json.patch(good, [{"op": "add", "path": "/spec/data_sources/-", "value": {"source": location, "approved": true}}])

test_self_declared_approval_decides_nothing if {
	result := decide(published_source("transactions-prod"), "staging")
	denied_only_by(result, "data source transactions-prod is outside the approved prefixes for staging: gs://ml-datasets-, s3://approved-data-")
}

test_approved_source_names_come_from_data if {
	approved := {"approved_data_sources": ["transactions-prod"]}
	decide_with(published_source("transactions-prod"), "staging", approved).allow

	# a name, not a prefix
	result := decide_with(published_source("transactions-prod-copy"), "staging", approved)
	denied_only_by(result, "data source transactions-prod-copy is outside the approved prefixes for staging: gs://ml-datasets-, s3://approved-data- (approved sources: transactions-prod)")
}

test_regression_against_an_unnumbered_serving_version if {
	manifest := json.remove(with_spec({"serving": {"metrics": {"accuracy": 0.96}}}), ["spec/serving/version"])
	denied_only_by(decide(manifest, "production"), "accuracy 0.9300 is 0.0300 below the serving version (unnumbered) (0.9600) in production; the maximum drop is 0.0200")
}

test_dependencies_that_are_not_a_list_count_as_none if {
	manifest := json.patch(good, [{"op": "replace", "path": "/spec/dependencies", "value": "torch>=2.0.0"}])
	denied_only_by(decide(manifest, "production"), "no dependencies recorded for the model (requirements.txt); production requires them")
	decide(manifest, "local").warn == {"no dependencies recorded for the model (requirements.txt); local requires them"}
}

test_vulnerability_entries_that_are_not_objects_are_denied if {
	result := decide_with(good, "staging", {"vulnerable_dependencies": ["torch==1.8.0", {"name": 5, "specifier": ""}]})
	result.deny == {
		"policy data for staging: governance.vulnerable_dependencies entry \"torch==1.8.0\" needs a name and a specifier of ==, !=, <, <=, >, >= clauses with numeric versions",
		"policy data for staging: governance.vulnerable_dependencies entry {\"name\":5,\"specifier\":\"\"} needs a name and a specifier of ==, !=, <, <=, >, >= clauses with numeric versions",
	}
}
