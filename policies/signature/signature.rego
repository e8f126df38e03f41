# Image signature: may this image start in input.environment?
#
# Input:  {"environment": ENV, "verification": <ImageVerification
#         (mlflow_ztml/supply_chain/verification.py) as a dict>}. The facts say whether the
#         image could be checked at all (`verifiable`), what its cosign signature check found
#         (`signature`: verified | missing | invalid) and what its governance decision
#         attestation check found (`attestation`: verified | missing | invalid |
#         other_environment | denied | mismatch), each with a `*_detail` sentence.
# Data:   data.ztml.environments[ENV].signature.enforcement says per check whether a finding
#         denies, warns or is off (missing or unknown: deny).
# Output: deny, warn (sets of messages), allow (true iff deny is empty), findings.
package ztml.signature

import data.ztml.lib

env := input.environment

settings := object.get(object.get(data.ztml.environments, env, {}), "signature", {})

facts := input.verification

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
	msg := sprintf("no policy data for environment %s", [env])
}

deny contains "policy input has no verification facts (input.verification must be an object)" if {
	not is_object(object.get(input, "verification", null))
}

_finding(check, message) := {"check": check, "level": lib.level(settings, check), "message": message}

_detail(key) := d if {
	d := object.get(facts, key, null)
	is_string(d)
	d != ""
} else := "no detail"

_consequence(check) := msg if {
	lib.level(settings, check) == "deny"
	msg := sprintf("%s only starts signed images ztml approved for it", [env])
} else := sprintf("%s accepts this with a warning", [env])

# --- findings -----------------------------------------------------------------------------

# No verification key, or an image that lives in no registry: nothing could be checked.
findings contains f if {
	object.get(facts, "verifiable", false) != true
	f := _finding("unverifiable", sprintf(
		"image signature not checked: %s; %s",
		[_detail("unverifiable_reason"), _consequence("unverifiable")],
	))
}

findings contains f if {
	object.get(facts, "verifiable", false) == true
	object.get(facts, "signature", "missing") == "missing"
	f := _finding("unsigned", sprintf("image is unsigned: %s; %s", [_detail("signature_detail"), _consequence("unsigned")]))
}

# A signature that does not verify is evidence of tampering or of another signer.
findings contains f if {
	object.get(facts, "verifiable", false) == true
	not object.get(facts, "signature", "missing") in {"missing", "verified"}
	f := _finding("signature_invalid", sprintf("image signature rejected: %s", [_detail("signature_detail")]))
}

findings contains f if {
	object.get(facts, "verifiable", false) == true
	object.get(facts, "attestation", "missing") == "missing"
	f := _finding("attestation_missing", sprintf(
		"no governance decision attestation: %s; %s",
		[_detail("attestation_detail"), _consequence("attestation_missing")],
	))
}

# Attested for another environment, attested as denied, for another model, or not verifying.
findings contains f if {
	object.get(facts, "verifiable", false) == true
	not object.get(facts, "attestation", "missing") in {"missing", "verified"}
	f := _finding("attestation_mismatch", sprintf(
		"governance decision attestation rejected (%s): %s",
		[object.get(facts, "attestation", "unknown"), _detail("attestation_detail")],
	))
}
