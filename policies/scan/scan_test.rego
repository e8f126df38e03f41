package ztml.scan_test

import data.ztml.scan

# A report every built-in environment allows: every scanner ran, the database was there.
clean := {
	"image": "registry.example/ztml-models/credit@sha256:0123",
	"scanner": "trivy",
	"vulnerability_db": "available",
	"vulnerability_db_detail": null,
	"scanners": {"vulnerability": "ok", "secret": "ok", "misconfiguration": "ok", "sbom": "ok"},
	"errors": [],
	"vulnerabilities": [{
		"kind": "vulnerability", "id": "CVE-2025-0001", "severity": "MEDIUM",
		"package": "libssl3", "installed_version": "3.0.15", "fixed_version": "3.0.16",
		"fix_available": true,
	}],
	"secrets": [],
	"misconfigurations": [{
		"kind": "misconfiguration", "id": "AVD-DS-0026", "severity": "LOW",
		"title": "No HEALTHCHECK defined", "target": "Dockerfile", "location": "Dockerfile",
	}],
}

critical_fixable := {
	"kind": "vulnerability", "id": "CVE-2025-1111", "severity": "CRITICAL",
	"package": "openssl", "installed_version": "3.0.1", "fixed_version": "3.0.2",
	"fix_available": true,
}

critical_unfixed := {
	"kind": "vulnerability", "id": "CVE-2025-2222", "severity": "CRITICAL",
	"package": "zlib1g", "installed_version": "1.2.13", "fixed_version": null,
	"fix_available": false,
}

aws_key := {
	"kind": "secret", "id": "aws-access-key-id", "severity": "CRITICAL",
	"title": "AWS Access Key ID", "target": "/opt/model/creds.txt",
	"location": "/opt/model/creds.txt:1",
}

root_user := {
	"kind": "misconfiguration", "id": "AVD-DS-0002", "severity": "HIGH",
	"title": "Image user should not be 'root'", "target": "Dockerfile", "location": "Dockerfile:3",
}

with_list(key, item) := json.patch(clean, [{"op": "add", "path": concat("/", ["", key, "-"]), "value": item}])

decide(report, env) := {"allow": allow, "deny": deny, "warn": warn} if {
	document := {"environment": env, "report": report}
	allow := scan.allow with input as document
	deny := scan.deny with input as document
	warn := scan.warn with input as document
}

decide_with(report, env, overrides) := result if {
	environments := object.union(data.ztml.environments, {env: {"scan": overrides}})
	result := decide(report, env) with data.ztml.environments as environments
}

denied_only_by(result, message) if {
	result.allow == false
	result.deny == {message}
}

environments := ["local", "staging", "production"]

# --- a clean report ---------------------------------------------------------------------------

test_clean_report_is_allowed_everywhere if {
	every env in environments {
		decide(clean, env) == {"allow": true, "deny": set(), "warn": set()}
	}
}

# --- the envelope and the data ----------------------------------------------------------------

test_unknown_environment_is_denied if {
	denied_only_by(decide(clean, "qa"), "no policy data for environment qa (known: local, production, staging)")
}

test_missing_environment_is_denied if {
	result := scan.deny with input as {"report": clean}
	"policy input has no environment (input.environment must be a string)" in result
	not scan.allow with input as {"report": clean}
}

test_missing_report_is_denied if {
	result := scan.deny with input as {"environment": "local"}
	"policy input has no scan report (input.report must be an object)" in result
	not scan.allow with input as {"environment": "local"}
}

test_missing_setting_in_data_is_denied if {
	environments := {"production": {"scan": object.remove(data.ztml.environments.production.scan, {"fixable_severities"})}}
	result := decide(clean, "production") with data.ztml.environments as environments
	denied_only_by(result, "policy data for production lacks scan.fixable_severities")
}

test_environment_without_scan_data_is_denied if {
	environments := {"production": {"governance": {}}}
	result := decide(clean, "production") with data.ztml.environments as environments
	"policy data for production lacks scan.required_scanners" in result.deny
	not result.allow
}

test_findings_carry_check_and_level if {
	found := scan.findings with input as {"environment": "local", "report": with_list("secrets", aws_key)}
	found == {{
		"check": "secret",
		"level": "deny",
		"message": "secret aws-access-key-id (AWS Access Key ID) in /opt/model/creds.txt:1; no secret may ship in an image for local",
	}}
}

# --- vulnerabilities --------------------------------------------------------------------------

test_critical_with_fix_is_denied_everywhere if {
	every env in environments {
		result := decide(with_list("vulnerabilities", critical_fixable), env)
		denied_only_by(result, sprintf("CVE-2025-1111 (CRITICAL) in openssl 3.0.1 is fixed in 3.0.2; %s does not accept fixable CRITICAL vulnerabilities", [env]))
	}
}

test_critical_without_fix_is_a_warning if {
	every env in environments {
		result := decide(with_list("vulnerabilities", critical_unfixed), env)
		result.allow
		result.warn == {"CVE-2025-2222 (CRITICAL) in zlib1g 1.2.13 has no fix yet"}
	}
}

test_high_with_fix_is_allowed_by_default if {
	high := object.union(critical_fixable, {"severity": "HIGH"})
	decide(with_list("vulnerabilities", high), "production").allow
}

test_fixable_severities_are_data if {
	high := object.union(critical_fixable, {"severity": "HIGH", "id": "CVE-2025-3333"})
	result := decide_with(with_list("vulnerabilities", high), "production", {"fixable_severities": ["CRITICAL", "HIGH"]})
	denied_only_by(result, "CVE-2025-3333 (HIGH) in openssl 3.0.1 is fixed in 3.0.2; production does not accept fixable CRITICAL, HIGH vulnerabilities")
}

test_ignored_vulnerability_is_skipped if {
	result := decide_with(with_list("vulnerabilities", critical_fixable), "production", {"ignored_ids": ["CVE-2025-1111"]})
	result == {"allow": true, "deny": set(), "warn": set()}
}

test_fixable_enforcement_can_be_a_warning if {
	result := decide_with(with_list("vulnerabilities", critical_fixable), "staging", {"enforcement": {"vulnerability_fixable": "warn"}})
	result.allow
	count(result.warn) == 1
}

test_unknown_enforcement_level_denies if {
	result := decide_with(with_list("vulnerabilities", critical_unfixed), "local", {"enforcement": {"vulnerability_unfixed": "ignore"}})
	denied_only_by(result, "CVE-2025-2222 (CRITICAL) in zlib1g 1.2.13 has no fix yet")
}

test_missing_package_fields_still_give_a_message if {
	bare := {"kind": "vulnerability", "id": "CVE-2025-4444", "severity": "critical", "fix_available": true, "package": null}
	result := decide(with_list("vulnerabilities", bare), "local")
	denied_only_by(result, "CVE-2025-4444 (critical) in ? ? is fixed in a newer version; local does not accept fixable CRITICAL vulnerabilities")
}

# --- secrets ----------------------------------------------------------------------------------

test_any_secret_is_denied_everywhere if {
	every env in environments {
		low := object.union(aws_key, {"severity": "LOW"})
		result := decide(with_list("secrets", low), env)
		denied_only_by(result, sprintf("secret aws-access-key-id (AWS Access Key ID) in /opt/model/creds.txt:1; no secret may ship in an image for %s", [env]))
	}
}

test_secret_without_location_names_the_target if {
	bare := {"kind": "secret", "id": "github-pat", "severity": "CRITICAL", "title": "", "target": "opt/app/x.py"}
	result := decide(with_list("secrets", bare), "production")
	denied_only_by(result, "secret github-pat (github-pat) in opt/app/x.py; no secret may ship in an image for production")
}

test_secrets_are_not_ignorable_by_id if {
	result := decide_with(with_list("secrets", aws_key), "local", {"ignored_ids": ["aws-access-key-id"]})
	not result.allow
}

# --- misconfigurations ------------------------------------------------------------------------

test_high_misconfiguration_denies_in_staging_and_production if {
	every env in ["staging", "production"] {
		result := decide(with_list("misconfigurations", root_user), env)
		denied_only_by(result, "misconfiguration AVD-DS-0002 (HIGH) in Dockerfile:3: Image user should not be 'root'")
	}
}

test_high_misconfiguration_warns_locally if {
	result := decide(with_list("misconfigurations", root_user), "local")
	result.allow
	result.warn == {"misconfiguration AVD-DS-0002 (HIGH) in Dockerfile:3: Image user should not be 'root'"}
}

test_ignored_misconfiguration_is_skipped if {
	decide_with(with_list("misconfigurations", root_user), "production", {"ignored_ids": ["AVD-DS-0002"]}).allow
}

# --- the vulnerability database ---------------------------------------------------------------

no_db := object.union(clean, {
	"vulnerability_db": "unavailable",
	"vulnerability_db_detail": "failed to download vulnerability DB",
	"scanners": {"vulnerability": "unavailable", "secret": "ok", "misconfiguration": "ok", "sbom": "ok"},
	"vulnerabilities": [],
})

test_unavailable_database_denies_production if {
	result := decide(no_db, "production")
	denied_only_by(result, "vulnerabilities were not scanned: the vulnerability database is unavailable (failed to download vulnerability DB); production requires a vulnerability scan")
}

test_unavailable_database_warns_in_local_and_staging if {
	every env in ["local", "staging"] {
		result := decide(no_db, env)
		result.allow
		result.warn == {sprintf("vulnerabilities were not scanned: the vulnerability database is unavailable (failed to download vulnerability DB); %s accepts this with a warning", [env])}
	}
}

test_database_state_missing_counts_as_unavailable if {
	result := decide(json.remove(no_db, ["vulnerability_db", "vulnerability_db_detail"]), "production")
	denied_only_by(result, "vulnerabilities were not scanned: the vulnerability database is unavailable (no detail); production requires a vulnerability scan")
}

test_disabled_database_is_judged_like_unavailable if {
	disabled := object.union(no_db, {"vulnerability_db": "disabled", "vulnerability_db_detail": "scanning is disabled"})
	not decide(disabled, "production").allow
	decide(disabled, "local").allow
}

test_database_enforcement_is_data if {
	result := decide_with(no_db, "production", {"enforcement": {"vulnerability_db_unavailable": "warn"}})
	result.allow
	count(result.warn) == 1
}

# --- scanners that did not run ----------------------------------------------------------------

test_failed_secret_scanner_denies_in_production if {
	report := json.patch(clean, [{"op": "replace", "path": "/scanners/secret", "value": "failed"}])
	result := decide(report, "production")
	denied_only_by(result, "the secret scanner did not run (failed); production requires misconfiguration, sbom, secret")
}

test_missing_sbom_warns_locally if {
	report := json.remove(clean, ["scanners/sbom"])
	result := decide(report, "local")
	result.allow
	result.warn == {"the sbom scanner did not run (missing); local requires misconfiguration, sbom, secret"}
}

test_scanner_errors_are_findings if {
	report := object.union(clean, {"errors": ["trivy config failed: boom"]})
	denied_only_by(decide(report, "staging"), "scanner error: trivy config failed: boom")
}

test_everything_disabled_is_denied_in_production if {
	report := {
		"image": "x",
		"vulnerability_db": "disabled",
		"scanners": {"vulnerability": "disabled", "secret": "disabled", "misconfiguration": "disabled", "sbom": "disabled"},
		"vulnerabilities": [], "secrets": [], "misconfigurations": [], "errors": [],
	}
	result := decide(report, "production")
	count(result.deny) == 4
	result.allow == false
	decide(report, "local").allow
}
