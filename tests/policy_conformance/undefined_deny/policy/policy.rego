package spacelift

import rego.v1

deny := {"denied"} if input.deny_me
