package spacelift

import rego.v1

deny contains "every changed file must be under stacks/" if {
	not every_change_under_stacks
}

every_change_under_stacks if {
	every change in input.run.changes {
		startswith(change, "stacks/")
	}
}
