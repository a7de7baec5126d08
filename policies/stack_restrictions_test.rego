package spacelift_test

import rego.v1

import data.spacelift

restrictions := {
	"no_task_stacks": ["prod-db"],
	"change_window_stacks": ["prod-net"],
	"change_window": {"days": ["Monday", "Tuesday"], "start_hour": 9, "end_hour": 17},
}

# 2024-01-01 was a Monday.
monday_10h := time.parse_rfc3339_ns("2024-01-01T10:00:00Z")

monday_20h := time.parse_rfc3339_ns("2024-01-01T20:00:00Z")

sunday_10h := time.parse_rfc3339_ns("2023-12-31T10:00:00Z")

run(kind, stack) := {"run": {"type": kind}, "static_run_environment": {"stack_slug": stack}}

test_denies_task_on_listed_stack if {
	spacelift.stack_restriction_denials == {"tasks are not allowed on stack \"prod-db\""} with input as run("TASK", "prod-db")
		with data.launcher_policy as restrictions
}

test_allows_task_elsewhere if {
	count(spacelift.stack_restriction_denials) == 0 with input as run("TASK", "dev")
		with data.launcher_policy as restrictions
}

test_inside_window_on_monday_morning if {
	spacelift.inside_change_window_at(monday_10h) with data.launcher_policy as restrictions
}

test_outside_window_on_monday_evening if {
	not spacelift.inside_change_window_at(monday_20h) with data.launcher_policy as restrictions
}

test_denies_tracked_after_hours if {
	count(spacelift.stack_restriction_denials) == 1 with input as run("TRACKED", "prod-net")
		with data.launcher_policy as restrictions
		with time.now_ns as monday_20h
}

test_denies_tracked_on_other_day if {
	count(spacelift.stack_restriction_denials) == 1 with input as run("TRACKED", "prod-net")
		with data.launcher_policy as restrictions
		with time.now_ns as sunday_10h
}

test_proposed_runs_are_not_restricted if {
	count(spacelift.stack_restriction_denials) == 0 with input as run("PROPOSED", "prod-net")
		with data.launcher_policy as restrictions
		with time.now_ns as sunday_10h
}
