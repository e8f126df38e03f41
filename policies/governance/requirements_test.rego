package ztml.governance_requirements_test

# The requirements rule of ztml.governance: findings computed in Python (input.requirements)
# become denies or warnings as data.ztml.environments[ENV].requirements.enforcement says.

import data.ztml.governance

manifest := {
	"apiVersion": "mlifecycle.io/v1",
	"kind": "ModelDeployment",
	"metadata": {"name": "credit"},
	"spec": {"model": {"name": "credit", "version": "4", "uri": "models:/credit/4", "framework": "sklearn"}},
}

report(findings) := {"runtime": "docker", "target": "image", "status": "checked", "findings": findings}

local_label := {
	"check": "requirements_unsatisfiable",
	"requirement": "torch==2.13.0+cpu",
	"message": "requirement torch==2.13.0+cpu has a local version label (+cpu) that the configured index (PyPI) does not serve: add an index that has it to build.pip_extra_index_url (ztml.yaml), or log the model with pip_requirements=['torch==2.13.0']",
}

no_skops := {
	"check": "requirements_flavor_package",
	"package": "skops",
	"message": "model flavor sklearn (serialization_format skops) loads with skops, which the model's requirements do not include",
}

unreachable := {
	"check": "requirements_index_unreachable",
	"message": "package index PyPI could not be reached (ConnectTimeout); 3 requirement(s) not verified",
}

unchecked := {
	"check": "requirements_unchecked",
	"message": "the model's requirements were not checked (build.requirements_check.enabled is false in ztml.yaml)",
}

decide(env, requirements) := {"deny": deny, "warn": warn, "findings": findings} if {
	document := {"environment": env, "manifest": manifest, "requirements": requirements}
	deny := governance.deny with input as document
	warn := governance.warn with input as document
	findings := governance.findings with input as document
}

test_a_local_version_label_the_index_cannot_serve_denies_in_every_environment if {
	local_label.message in decide("local", report([local_label])).deny
	local_label.message in decide("staging", report([local_label])).deny
	local_label.message in decide("production", report([local_label])).deny
}

test_a_missing_flavor_package_denies_in_every_environment if {
	no_skops.message in decide("local", report([no_skops])).deny
	no_skops.message in decide("staging", report([no_skops])).deny
	no_skops.message in decide("production", report([no_skops])).deny
}

test_an_unreachable_index_warns_then_denies_in_production if {
	unreachable.message in decide("local", report([unreachable])).warn
	not unreachable.message in decide("local", report([unreachable])).deny
	unreachable.message in decide("staging", report([unreachable])).warn
	unreachable.message in decide("production", report([unreachable])).deny
}

test_an_unchecked_model_warns_then_denies_in_production if {
	unchecked.message in decide("local", report([unchecked])).warn
	unchecked.message in decide("production", report([unchecked])).deny
}

test_findings_carry_their_check_and_level if {
	result := decide("local", report([unreachable, local_label]))
	{"check": "requirements_index_unreachable", "level": "warn", "message": unreachable.message} in result.findings
	{"check": "requirements_unsatisfiable", "level": "deny", "message": local_label.message} in result.findings
}

test_levels_are_data if {
	environments := object.union(
		data.ztml.environments,
		{"local": {"requirements": {"enforcement": {"requirements_unsatisfiable": "off"}}}},
	)
	result := decide("local", report([local_label])) with data.ztml.environments as environments
	not local_label.message in result.deny
	not local_label.message in result.warn
}

test_an_environment_without_requirements_enforcement_denies if {
	environments := json.remove(data.ztml.environments, ["local/requirements"])
	result := decide("local", report([unreachable])) with data.ztml.environments as environments
	unreachable.message in result.deny
}

test_an_unknown_check_is_judged_as_unsatisfiable if {
	odd := {"check": "metrics", "message": "something the policy has no level for"}
	result := decide("local", report([odd]))
	odd.message in result.deny
	{"check": "requirements_unsatisfiable", "level": "deny", "message": odd.message} in result.findings
}

test_a_finding_without_a_message_still_denies if {
	result := decide("local", report([{"check": "requirements_unsatisfiable"}]))
	"the requirements check reported a finding without a message" in result.deny
}

test_no_requirements_input_means_no_requirements_findings if {
	document := {"environment": "local", "manifest": manifest}
	checks := {f.check | some f in governance.findings with input as document}
	count({c | some c in checks; startswith(c, "requirements_")}) == 0
}

test_a_clean_report_adds_nothing if {
	result := decide("production", report([]))
	count({f | some f in result.findings; startswith(f.check, "requirements_")}) == 0
}
