package spacelift

import rego.v1

deny contains msg if {
	ratio := input.a / input.b
	ratio > 1
	msg := "ratio too high"
}
