package spacelift_test

import rego.v1

import data.spacelift

good := "0000000000000000000000000000000000000000000000000000000000000001"

bad := "00000000000000000000000000000000000000000000000000000000000000ff"

allow_list := {"allowed_binary_digests": {"spacelift-worker": [good]}}

binaries(map) := {"launcher": {"binaries": map}}

test_allows_listed_digest if {
	count(spacelift.worker_binary_denials) == 0 with input as binaries({"spacelift-worker": good})
		with data.launcher_policy as allow_list
}

test_denies_other_digest if {
	count(spacelift.worker_binary_denials) == 1 with input as binaries({"spacelift-worker": bad})
		with data.launcher_policy as allow_list
}

test_denies_unknown_binary if {
	count(spacelift.worker_binary_denials) == 1 with input as binaries({"other": good})
		with data.launcher_policy as allow_list
}

test_denies_no_binaries if {
	spacelift.worker_binary_denials == {"no verified worker binary was reported"} with input as binaries({})
		with data.launcher_policy as allow_list
}
