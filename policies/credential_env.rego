# Deny plain-text environment variables whose names look like credentials. Secret variables reach
# the policy in sanitized form ("sanitized:" + 16 hex digits), so they pass; plain ones do not.
#   data.launcher_policy.credential_name_exceptions: ["TF_VAR_token_ttl", ...]
package spacelift

import rego.v1

# data.launcher_policy, or {} without one. (Reading all of `data` from a rule, as in
# object.get(data, ["launcher_policy", ...]), is recursion to OPA: it includes the rule itself.)
credential_env_settings := {k: v | some k, v in data.launcher_policy}

credential_name_pattern := `(?i)(secret|passw(or)?d|token|api_?key|private_?key|credential|access_?key)`

credential_env_denials contains msg if {
	some name, value in object.get(input, ["static_run_environment", "environment_variables"], {})
	regex.match(credential_name_pattern, name)
	not name in object.get(credential_env_settings, ["credential_name_exceptions"], [])
	not is_sanitized_value(value)
	msg := sprintf("environment variable %s looks like a credential but is not secret", [name])
}

deny contains msg if some msg in credential_env_denials

# Cheaper than a regular expression per variable: the form is fixed (see docs/policy.md).
is_sanitized_value(value) if {
	startswith(value, "sanitized:")
	count(value) == 26
}

