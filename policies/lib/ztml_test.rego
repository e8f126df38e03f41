package ztml.lib_test

import data.ztml.lib

test_fmt_renders_four_decimals if {
	lib.fmt(0.71) == "0.7100"
	lib.fmt(0.8) == "0.8000"
	lib.fmt(12.3456789) == "12.3457"
}

test_fmt_renders_integers_like_floats if {
	lib.fmt(2) == "2.0000"
	lib.fmt(0) == "0.0000"
}

test_fmt_rounds_half_away_from_noise if {
	lib.fmt(0.80499999) == "0.8050"
	lib.fmt(0.00004) == "0.0000"
}

test_fmt_keeps_the_sign_only_when_visible if {
	lib.fmt(-0.05) == "-0.0500"
	lib.fmt(-0.00001) == "0.0000"
}

test_exceeds_ignores_float_noise if {
	not lib.exceeds(0.90 - 0.88, 0.02)
	lib.exceeds(0.0201, 0.02)
	not lib.exceeds(0.01, 0.02)
}

test_level_reads_enforcement if {
	lib.level({"enforcement": {"signature": "warn"}}, "signature") == "warn"
	lib.level({"enforcement": {"signature": "off"}}, "signature") == "off"
	lib.level({"enforcement": {"signature": "deny"}}, "signature") == "deny"
}

test_level_fails_closed if {
	lib.level({}, "signature") == "deny"
	lib.level({"enforcement": {}}, "signature") == "deny"
	lib.level({"enforcement": {"signature": "maybe"}}, "signature") == "deny"
}

test_join_sorts if {
	lib.join(["b", "a", "c"]) == "a, b, c"
	lib.join({"x"}) == "x"
	lib.join([]) == ""
}

test_has_prefix if {
	lib.has_prefix("s3://approved-data-x/train", ["gs://ml-datasets-", "s3://approved-data-"])
	not lib.has_prefix("s3://other/train", ["gs://ml-datasets-", "s3://approved-data-"])
	not lib.has_prefix("s3://approved-data-x", [])
}
