# Image scan: may this image (built for input.environment) run there?
#
# Input:  {"environment": ENV, "report": <ScanReport (mlflow_ztml/scan.py) as a dict>}
#         The report says what each scanner did (`scanners`: ok | unavailable | failed |
#         disabled) and whether trivy had its vulnerability database (`vulnerability_db`). A
#         scanner that did not run is a finding here, never a clean result.
# Data:   data.ztml.environments[ENV].scan holds the severities and allowlists, and
#         `enforcement` says per check whether a finding denies, warns or is off.
# Output: deny, warn (sets of messages), allow (true iff deny is empty), findings.
#
# Messages name the finding, where it is and the environment, e.g.
# "secret aws-access-key-id (AWS Access Key ID) in opt/model/creds.txt:1; no secret may ship
# in an image for production".
package ztml.scan

import data.ztml.lib

env := input.environment

settings := data.ztml.environments[env].scan

report := input.report

required_settings := {
	"fixable_severities",
	"unfixed_severities",
	"misconfiguration_severities",
	"required_scanners",
	"ignored_ids",
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

deny contains "policy input has no scan report (input.report must be an object)" if {
	not is_object(object.get(input, "report", null))
}

deny contains msg if {
	configured := object.get(data.ztml.environments[env], "scan", {})
	some key in required_settings - {name | some name, value in configured; value != null}
	msg := sprintf("policy data for %s lacks scan.%s", [env, key])
}

_known_environments := names if {
	names := lib.join(object.keys(data.ztml.environments))
} else := "none"

# --- findings -----------------------------------------------------------------------------

_finding(check, message) := {"check": check, "level": lib.level(settings, check), "message": message}

_ignored(finding) if finding.id in settings.ignored_ids

# _str(x, fallback): x when it is a non-empty string (report fields may be null), else fallback.
_str(x, fallback) := x if {
	is_string(x)
	x != ""
} else := fallback

_package(v) := sprintf("%s %s", [_str(object.get(v, "package", null), "?"), _str(object.get(v, "installed_version", null), "?")])

_where(x) := _str(object.get(x, "location", null), _str(object.get(x, "target", null), "the image"))

# Vulnerabilities with a fix available at a denied severity (CRITICAL by default): the fix is
# a rebuild away, so shipping them is a choice.
findings contains f if {
	some v in report.vulnerabilities
	v.fix_available == true
	upper(v.severity) in settings.fixable_severities
	not _ignored(v)
	f := _finding("vulnerability_fixable", sprintf(
		"%s (%s) in %s is fixed in %s; %s does not accept fixable %s vulnerabilities",
		[v.id, v.severity, _package(v), _str(object.get(v, "fixed_version", null), "a newer version"), env, lib.join(settings.fixable_severities)],
	))
}

# The same severities without a fix: nothing to rebuild with, so a warning by default.
findings contains f if {
	some v in report.vulnerabilities
	not v.fix_available == true
	upper(v.severity) in settings.unfixed_severities
	not _ignored(v)
	f := _finding("vulnerability_unfixed", sprintf(
		"%s (%s) in %s has no fix yet",
		[v.id, v.severity, _package(v)],
	))
}

# Any secret, at any severity: a credential baked into an image leaks to whoever can pull it.
findings contains f if {
	some s in report.secrets
	f := _finding("secret", sprintf(
		"secret %s (%s) in %s; no secret may ship in an image for %s",
		[s.id, _str(object.get(s, "title", null), s.id), _where(s), env],
	))
}

findings contains f if {
	some m in report.misconfigurations
	upper(m.severity) in settings.misconfiguration_severities
	not _ignored(m)
	f := _finding("misconfiguration", sprintf(
		"misconfiguration %s (%s) in %s: %s",
		[m.id, m.severity, _where(m), _str(object.get(m, "title", null), "no title")],
	))
}

# No vulnerability database: the image was not checked for vulnerabilities at all.
findings contains f if {
	is_object(report)
	object.get(report, "vulnerability_db", "unavailable") != "available"
	f := _finding("vulnerability_db_unavailable", sprintf(
		"vulnerabilities were not scanned: the vulnerability database is %s (%s); %s",
		[object.get(report, "vulnerability_db", "unavailable"), _db_detail, _db_consequence],
	))
}

_db_detail := _str(object.get(report, "vulnerability_db_detail", null), "no detail")

_db_consequence := msg if {
	lib.level(settings, "vulnerability_db_unavailable") == "deny"
	msg := sprintf("%s requires a vulnerability scan", [env])
} else := sprintf("%s accepts this with a warning", [env])

# Every required scanner (secret, misconfiguration, sbom) must have run.
findings contains f if {
	is_object(report)
	some scanner in settings.required_scanners
	state := object.get(object.get(report, "scanners", {}), scanner, "missing")
	state != "ok"
	f := _finding("scanner_incomplete", sprintf(
		"the %s scanner did not run (%s); %s requires %s",
		[scanner, state, env, lib.join(settings.required_scanners)],
	))
}

findings contains f if {
	some error in object.get(report, "errors", [])
	f := _finding("scanner_incomplete", sprintf("scanner error: %s", [error]))
}
