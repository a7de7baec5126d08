package spacelift_test

import rego.v1

import data.spacelift

write_run(id, extra) := {
	"run": {"id": id},
	"static_run_environment": object.union({"run_type": "wo"}, extra),
}

test_denies_an_unconfirmed_write_run if {
	count(spacelift.confirmed_apply_denials) == 1 with input as write_run("run-1", {})
}

test_allows_the_planning_half if {
	count(spacelift.confirmed_apply_denials) == 0 with input as write_run("run-1", {"stage": "plan"})
}

test_allows_the_applying_half_of_its_own_plan if {
	count(spacelift.confirmed_apply_denials) == 0 with input as write_run("run-1.apply", {"stage": "apply", "plan_of": "run-1"})
}

test_denies_an_apply_of_another_runs_plan if {
	count(spacelift.confirmed_apply_denials) == 1 with input as write_run("run-2.apply", {"stage": "apply", "plan_of": "run-1"})
}

test_denies_an_apply_without_plan_of if {
	count(spacelift.confirmed_apply_denials) == 1 with input as write_run("run-1.apply", {"stage": "apply"})
}

test_denies_an_unknown_stage if {
	count(spacelift.confirmed_apply_denials) == 1 with input as write_run("run-1", {"stage": "later"})
}

test_read_only_runs_pass if {
	count(spacelift.confirmed_apply_denials) == 0 with input as {"run": {"id": "run-1"}, "static_run_environment": {"run_type": "ro"}}
}
