# Changes go through a confirmed plan. A write run (run_type "wo") must be a half of a confirmed
# run (`confirm_after` in its run spec): the planning half ("plan") stops until an operator
# decides; the applying half ("apply") exists only after `controlplane run confirm`, its signed
# ticket binding the plan it applies, and it must be the applying run of the plan it names.
# No settings.
package spacelift

import rego.v1

confirmed_apply_stage := object.get(input, ["static_run_environment", "stage"], "")

confirmed_apply_denials contains "write runs must be planned and confirmed first (confirm_after in the run spec)" if {
	input.static_run_environment.run_type == "wo"
	not confirmed_apply_stage in {"plan", "apply"}
}

confirmed_apply_denials contains msg if {
	confirmed_apply_stage == "apply"
	plan_of := object.get(input, ["static_run_environment", "plan_of"], "")
	object.get(input, ["run", "id"], "") != concat("", [plan_of, ".apply"])
	msg := sprintf("an applying run must apply its own confirmed plan, not %q", [plan_of])
}

deny contains msg if some msg in confirmed_apply_denials
