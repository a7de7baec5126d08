# Deny tasks on listed stacks, and tracked runs on listed stacks outside a change window.
#   data.launcher_policy.no_task_stacks:      ["prod-db", ...]
#   data.launcher_policy.change_window_stacks: ["prod-network", ...]
#   data.launcher_policy.change_window: {"days": ["Monday", ...], "start_hour": 9, "end_hour": 17}
#   (UTC hours, start inclusive, end exclusive; no window configured = always outside)
package spacelift

import rego.v1

# data.launcher_policy, or {} without one. (Reading all of `data` from a rule, as in
# object.get(data, ["launcher_policy", ...]), is recursion to OPA: it includes the rule itself.)
stack_restrictions_settings := {k: v | some k, v in data.launcher_policy}

stack_restriction_denials contains msg if {
	input.run.type == "TASK"
	stack := input.static_run_environment.stack_slug
	stack in object.get(stack_restrictions_settings, ["no_task_stacks"], [])
	msg := sprintf("tasks are not allowed on stack %q", [stack])
}

stack_restriction_denials contains msg if {
	input.run.type == "TRACKED"
	stack := input.static_run_environment.stack_slug
	stack in object.get(stack_restrictions_settings, ["change_window_stacks"], [])
	not inside_change_window
	msg := sprintf("tracked runs on stack %q are allowed only inside the change window", [stack])
}

inside_change_window if inside_change_window_at(time.now_ns())

inside_change_window_at(now) if {
	window := object.get(stack_restrictions_settings, ["change_window"], {})
	time.weekday(now) in window.days
	hour := time.clock(now)[0]
	hour >= window.start_hour
	hour < window.end_hour
}

deny contains msg if some msg in stack_restriction_denials
