# Require a signed-run token: a JWT carried in the run's user-provided metadata as the entry
# "signed-run=<JWT>", verified with io.jwt.decode_verify against the configured public key and
# bound to this stack and commit.
#   data.launcher_policy.signed_run: {
#     "public_key": "-----BEGIN PUBLIC KEY-----\n…",  one PEM key or certificate (OPA: one block)
#     "issuer": "https://ci.example.com",             the token's iss must equal it
#     "audience": "spacelift-launcher",               the token's aud must be (or contain) it
#     "alg": "ES256",                                 optional: the only algorithm accepted
#     "max_lifetime_seconds": 3600                    optional (default 3600): exp - now at most
#   }
# Claims: "stack" == static_run_environment.stack_slug, "commit" == static_run_environment.commit_sha,
# "exp" required; "nbf" honoured. io.jwt.decode_verify is a launcher builtin (regorus has none);
# OPA has it natively, so this file also runs under opa.
package spacelift

import rego.v1

# data.launcher_policy, or {} without one. (Reading all of `data` from a rule, as in
# object.get(data, ["launcher_policy", ...]), is recursion to OPA: it includes the rule itself.)
signed_run_policy_settings := {k: v | some k, v in data.launcher_policy}

signed_run_prefix := "signed-run="

signed_run_settings := object.get(signed_run_policy_settings, ["signed_run"], {})

signed_run_max_lifetime := object.get(signed_run_settings, "max_lifetime_seconds", 3600)

signed_run_tokens contains substring(entry, count(signed_run_prefix), -1) if {
	some entry in object.get(input, ["run", "user_provided_metadata"], [])
	is_string(entry)
	startswith(entry, signed_run_prefix)
}

signed_run_configured if {
	every name in ["public_key", "issuer", "audience"] {
		is_string(signed_run_settings[name])
		signed_run_settings[name] != ""
	}
	is_number(signed_run_max_lifetime)
	signed_run_max_lifetime > 0
}

signed_run_alg := {"alg": signed_run_settings.alg} if is_string(signed_run_settings.alg) else := {}

signed_run_constraints := object.union(signed_run_alg, {
	"cert": signed_run_settings.public_key,
	"iss": signed_run_settings.issuer,
	"aud": signed_run_settings.audience,
	"time": time.now_ns(),
})

# The verified claims; undefined unless exactly one token verifies.
signed_run_claims := claims if {
	signed_run_configured
	count(signed_run_tokens) == 1
	some token in signed_run_tokens
	[valid, _, claims] := io.jwt.decode_verify(token, signed_run_constraints)
	valid == true
}

# The claim equals a non-empty string at `path` in the input.
signed_run_bound(claim, path) if {
	value := object.get(input, path, null)
	is_string(value)
	value != ""
	signed_run_claims[claim] == value
}

signed_run_denials contains msg if {
	not signed_run_configured
	msg := "signed-run is not configured: data.launcher_policy.signed_run needs public_key, issuer and audience (and a positive max_lifetime_seconds if set)"
}

signed_run_denials contains "the run carries no signed-run token (user-provided metadata entry signed-run=<JWT>)" if {
	count(signed_run_tokens) == 0
}

signed_run_denials contains "the run carries more than one signed-run token" if {
	count(signed_run_tokens) > 1
}

signed_run_denials contains msg if {
	signed_run_configured
	count(signed_run_tokens) == 1
	not signed_run_claims
	msg := "the signed-run token is invalid: bad signature or key, wrong issuer or audience, expired, or not yet valid"
}

signed_run_denials contains msg if {
	claims := signed_run_claims
	not signed_run_bound("stack", ["static_run_environment", "stack_slug"])
	msg := sprintf("the signed-run token is for stack %v, not %v", [
		object.get(claims, "stack", null),
		object.get(input, ["static_run_environment", "stack_slug"], null),
	])
}

signed_run_denials contains msg if {
	claims := signed_run_claims
	not signed_run_bound("commit", ["static_run_environment", "commit_sha"])
	msg := sprintf("the signed-run token is for commit %v, not %v", [
		object.get(claims, "commit", null),
		object.get(input, ["static_run_environment", "commit_sha"], null),
	])
}

signed_run_denials contains "the signed-run token has no numeric exp claim" if {
	claims := signed_run_claims
	not is_number(object.get(claims, "exp", null))
}

signed_run_denials contains msg if {
	exp := signed_run_claims.exp
	is_number(exp)
	exp - (time.now_ns() / 1000000000) > signed_run_max_lifetime
	msg := sprintf("the signed-run token is valid for more than %v seconds", [signed_run_max_lifetime])
}

deny contains msg if some msg in signed_run_denials
