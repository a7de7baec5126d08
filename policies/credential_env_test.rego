package spacelift_test

import rego.v1

import data.spacelift

env(vars) := {"static_run_environment": {"environment_variables": vars}}

test_denies_plain_token if {
	spacelift.credential_env_denials == {"environment variable GITHUB_TOKEN looks like a credential but is not secret"} with input as env({"GITHUB_TOKEN": "ghp_plaintext"})
}

test_allows_sanitized_secret if {
	count(spacelift.credential_env_denials) == 0 with input as env({"DB_PASSWORD": sanitized("hunter2")})
}

test_sanitized_builtin_matches_input_form if {
	sanitized("hunter2") == sanitized("hunter2")
	sanitized("hunter2") != sanitized("hunter3")
	startswith(sanitized("x"), "sanitized:")
}

test_allows_ordinary_names if {
	count(spacelift.credential_env_denials) == 0 with input as env({"TF_LOG": "debug", "AWS_REGION": "eu-west-1"})
}

test_exception_list if {
	count(spacelift.credential_env_denials) == 0 with input as env({"TOKEN_TTL": "3600"})
		with data.launcher_policy as {"credential_name_exceptions": ["TOKEN_TTL"]}
}

test_case_insensitive if {
	count(spacelift.credential_env_denials) == 1 with input as env({"my_Api_Key": "abc"})
}
