package spacelift_test

import rego.v1

import data.spacelift

config := {"allowed_registries": ["ghcr.io", "registry.example.com:5000"]}

test_allows_listed_registry if {
	count(spacelift.registry_denials) == 0 with input as {"docker_image": "ghcr.io/acme/runner:1.2"}
		with data.launcher_policy as config
}

test_allows_registry_with_port if {
	count(spacelift.registry_denials) == 0 with input as {"docker_image": "registry.example.com:5000/runner"}
		with data.launcher_policy as config
}

test_denies_docker_hub_short_name if {
	some msg in spacelift.registry_denials with input as {"docker_image": "alpine:3"}
		with data.launcher_policy as config
	contains(msg, "docker.io")
}

test_denies_lookalike_registry if {
	count(spacelift.registry_denials) == 1 with input as {"docker_image": "ghcr.io.evil.com/acme/runner"}
		with data.launcher_policy as config
}

test_no_list_denies_everything if {
	count(spacelift.registry_denials) == 1 with input as {"docker_image": "ghcr.io/acme/runner"}
		with data.launcher_policy as {}
}

test_denial_reaches_deny if {
	some msg in spacelift.deny with input as {"docker_image": "alpine"}
		with data.launcher_policy as config
	startswith(msg, "image \"alpine\"")
}
