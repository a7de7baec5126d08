# Tokens and keys come from signed_run_fixtures_test.rego (tests/signed_run_tokens.py makes it).
package signed_run_test

import rego.v1

import data.signed_run_fixtures as fx
import data.spacelift

config := {"signed_run": {"public_key": fx.public_key, "issuer": fx.issuer, "audience": fx.audience}}

with_settings(extra) := {"signed_run": object.union(config.signed_run, extra)}

# One minute after the fixtures were issued: inside their validity.
now := (fx.issued_at + 60) * 1000000000

run_with(metadata, stack, commit) := {
	"run": {"user_provided_metadata": metadata},
	"static_run_environment": {"stack_slug": stack, "commit_sha": commit},
}

run_with_token(token) := run_with(["ticket=OPS-1", concat("", ["signed-run=", token])], fx.stack, fx.commit)

invalid := "the signed-run token is invalid: bad signature or key, wrong issuer or audience, expired, or not yet valid"

denials(token, settings, at) := result if {
	result := spacelift.signed_run_denials with input as run_with_token(token)
		with data.launcher_policy as settings
		with time.now_ns as at
}

test_allows_valid_token if {
	count(denials(fx.good, config, now)) == 0
}

test_denies_token_signed_by_another_key if {
	denials(fx.good, with_settings({"public_key": fx.other_public_key}), now) == {invalid}
}

test_allows_matching_alg_setting if {
	count(denials(fx.good, with_settings({"alg": "ES256"}), now)) == 0
}

test_denies_run_without_token if {
	spacelift.signed_run_denials == {"the run carries no signed-run token (user-provided metadata entry signed-run=<JWT>)"} with input as run_with(["ticket=OPS-1"], fx.stack, fx.commit)
		with data.launcher_policy as config
}

test_denies_run_without_metadata if {
	count(spacelift.signed_run_denials) == 1 with input as {}
		with data.launcher_policy as config
}

test_denies_two_tokens if {
	entry := concat("", ["signed-run=", fx.good])
	other := concat("", ["signed-run=", fx.long_lived])
	spacelift.signed_run_denials == {"the run carries more than one signed-run token"} with input as run_with([entry, other], fx.stack, fx.commit)
		with data.launcher_policy as config
		with time.now_ns as now
}

test_denies_without_configuration if {
	some msg in denials(fx.good, {}, now)
	startswith(msg, "signed-run is not configured")
}

test_denies_non_positive_lifetime_setting if {
	some msg in denials(fx.good, with_settings({"max_lifetime_seconds": 0}), now)
	startswith(msg, "signed-run is not configured")
}

test_denies_token_for_other_stack if {
	spacelift.signed_run_denials == {`the signed-run token is for stack prod-db, not dev`} with input as run_with([concat("", ["signed-run=", fx.good])], "dev", fx.commit)
		with data.launcher_policy as config
		with time.now_ns as now
}

test_denies_token_for_other_commit if {
	count(spacelift.signed_run_denials) == 1 with input as run_with([concat("", ["signed-run=", fx.good])], fx.stack, "0000000")
		with data.launcher_policy as config
		with time.now_ns as now
}

test_denies_when_input_has_no_commit if {
	inp := {"run": {"user_provided_metadata": [concat("", ["signed-run=", fx.good])]}, "static_run_environment": {"stack_slug": fx.stack}}
	spacelift.signed_run_denials == {`the signed-run token is for commit 4f1c2a9e8b7d6c5b4a39281706f5e4d3c2b1a098, not null`} with input as inp
		with data.launcher_policy as config
		with time.now_ns as now
}

test_denies_token_without_stack_claim if {
	denials(fx.no_stack, config, now) == {`the signed-run token is for stack null, not prod-db`}
}

test_denies_expired_token if {
	denials(fx.good, config, fx.expires_at * 1000000000) == {invalid}
}

test_denies_token_not_yet_valid if {
	denials(fx.good, config, (fx.issued_at - 1) * 1000000000) == {invalid}
}

test_denies_token_signed_by_other_key if {
	denials(fx.wrong_key, config, now) == {invalid}
}

test_denies_token_when_configured_with_other_key if {
	denials(fx.good, with_settings({"public_key": fx.other_public_key}), now) == {invalid}
}

test_denies_tampered_payload if {
	denials(fx.tampered, config, now) == {invalid}
}

test_denies_hs256_signed_with_the_public_key if {
	denials(fx.hs256_public_key, config, now) == {invalid}
}

test_denies_alg_none if {
	denials(fx.alg_none, config, now) == {invalid}
}

test_denies_tampered_signature if {
	parts := split(fx.good, ".")
	denials(concat(".", [parts[0], parts[1], "AAAA"]), config, now) == {invalid}
}

test_denies_wrong_issuer if {
	denials(fx.good, with_settings({"issuer": "https://evil.example.com"}), now) == {invalid}
}

test_denies_wrong_audience if {
	denials(fx.good, with_settings({"audience": "someone-else"}), now) == {invalid}
}

test_denies_token_without_exp if {
	denials(fx.no_exp, config, now) == {"the signed-run token has no numeric exp claim"}
}

test_denies_long_lived_token if {
	denials(fx.long_lived, config, now) == {"the signed-run token is valid for more than 3600 seconds"}
}

test_allows_long_lived_token_under_raised_limit if {
	count(denials(fx.long_lived, with_settings({"max_lifetime_seconds": 31 * 86400}), now)) == 0
}

test_denials_reach_deny if {
	some msg in spacelift.deny with input as run_with(["ticket=OPS-1"], fx.stack, fx.commit)
		with data.launcher_policy as config
	startswith(msg, "the run carries no signed-run token")
}
