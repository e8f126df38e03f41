package ztml.signature_test

import data.ztml.signature

verified := {
	"image": "registry.example/ztml-models/credit@sha256:0123",
	"verifiable": true,
	"unverifiable_reason": null,
	"signature": "verified",
	"signature_detail": "signed by key sha256:ab",
	"attestation": "verified",
	"attestation_detail": "decision for production allows credit v3",
}

with_facts(patch) := object.union(verified, patch)

decide(facts, env) := {"allow": allow, "deny": deny, "warn": warn} if {
	inp := {"environment": env, "verification": facts}
	allow := signature.allow with input as inp
	deny := signature.deny with input as inp
	warn := signature.warn with input as inp
}

test_signed_and_attested_allowed_everywhere if {
	every env in ["local", "staging", "production"] {
		d := decide(verified, env)
		d.allow
		count(d.warn) == 0
	}
}

test_unsigned_denied_in_production_warned_in_local if {
	facts := with_facts({"signature": "missing", "attestation": "missing", "signature_detail": "no .sig"})
	not decide(facts, "production").allow
	some msg in decide(facts, "production").deny
	contains(msg, "image is unsigned: no .sig")
	local := decide(facts, "local")
	local.allow
	some w in local.warn
	contains(w, "local accepts this with a warning")
}

test_other_key_denied_even_in_local if {
	facts := with_facts({"signature": "invalid", "signature_detail": "signed by another key"})
	not decide(facts, "local").allow
	some msg in decide(facts, "local").deny
	contains(msg, "image signature rejected: signed by another key")
}

test_attested_for_other_environment_denied if {
	facts := with_facts({"attestation": "other_environment", "attestation_detail": "attested for staging only"})
	not decide(facts, "production").allow
	not decide(facts, "local").allow
}

test_unverifiable_denied_in_production_warned_in_local if {
	facts := with_facts({"verifiable": false, "unverifiable_reason": "no signing key configured"})
	not decide(facts, "production").allow
	decide(facts, "local").allow
	some w in decide(facts, "local").warn
	contains(w, "no signing key configured")
}

test_missing_input_fails_closed if {
	not signature.allow with input as {"environment": "local"}
	not signature.allow with input as {"verification": verified}
}

test_enforcement_is_data if {
	facts := with_facts({"signature": "missing", "attestation": "missing"})
	d := decide(facts, "production") with data.ztml.environments.production.signature.enforcement as {"unsigned": "warn", "attestation_missing": "off"}
	d.allow
	count(d.warn) == 1
}
