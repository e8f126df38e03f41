# Helpers shared by every ztml policy package (governance, scan, deployment).
#
# They exist so that messages and enforcement behave the same in every Rego engine ztml
# supports: OPA's `sprintf("%.4f")` prints integers and exponent floats as `%!f(...)`, while
# regorus prints them as numbers, so numbers are formatted here with plain arithmetic.
package ztml.lib

# fmt(x) renders a number with exactly four decimals ("0.7100", "2.0000", "-0.0500").
# One body on purpose: nested helper calls cost several microseconds each in regorus.
fmt(x) := concat("", [sign, format_int(whole, 10), ".", fraction]) if {
	scaled := round(x * 10000)
	magnitude := abs(scaled)
	whole := floor(magnitude / 10000)

	# 10000 + fraction always has five digits; dropping the leading "1" zero-pads to four.
	fraction := substring(format_int(10000 + (magnitude - (whole * 10000)), 10), 1, 4)
	sign := {false: "", true: "-"}[scaled < 0]
}

# exceeds(a, b): a > b beyond floating-point noise, so that 0.90 - 0.88 (which is
# 0.020000000000000018 in binary floating point) does not count as exceeding 0.02.
exceeds(a, b) if a > b + 0.000000001

# level(settings, check) is how a finding of `check` is enforced: "deny", "warn" or "off",
# read from settings.enforcement[check]. Anything missing or unrecognised is "deny"
# (fail closed).
level(settings, check) := lvl if {
	lvl := object.get(object.get(settings, "enforcement", {}), check, "deny")
	lvl in {"warn", "off"}
} else := "deny"

# join(xs) lists strings for a message: "a, b, c" (sorted, so messages are stable).
join(xs) := concat(", ", sort([x | some x in xs]))

# has_prefix(s, prefixes) is true when s starts with one of prefixes.
has_prefix(s, prefixes) if {
	some prefix in prefixes
	startswith(s, prefix)
}
