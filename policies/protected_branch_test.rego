package spacelift_test

import rego.v1

import data.spacelift

branches := {"protected_branches": ["main", "release/*"]}

tracked(branch) := {"run": {"type": "TRACKED", "commit": {"branch": branch}}}

test_allows_main if {
	count(spacelift.protected_branch_denials) == 0 with input as tracked("main")
		with data.launcher_policy as branches
}

test_allows_release_glob if {
	count(spacelift.protected_branch_denials) == 0 with input as tracked("release/1.2")
		with data.launcher_policy as branches
}

test_denies_feature_branch if {
	count(spacelift.protected_branch_denials) == 1 with input as tracked("feature/x")
		with data.launcher_policy as branches
}

test_glob_does_not_cross_separator if {
	count(spacelift.protected_branch_denials) == 1 with input as tracked("release/1/evil")
		with data.launcher_policy as branches
}

test_denies_missing_branch if {
	count(spacelift.protected_branch_denials) == 1 with input as {"run": {"type": "TRACKED"}}
		with data.launcher_policy as branches
}

test_proposed_runs_pass if {
	count(spacelift.protected_branch_denials) == 0 with input as {"run": {"type": "PROPOSED", "commit": {"branch": "x"}}}
		with data.launcher_policy as branches
}
