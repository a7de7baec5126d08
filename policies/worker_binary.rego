# Deny runs when a verified launcher binary's SHA-256 is not allowlisted.
#   data.launcher_policy.allowed_binary_digests: {"spacelift-worker": ["<sha256>", ...]}
# A launcher that reports no worker binary is denied too.
package spacelift

import rego.v1

# data.launcher_policy, or {} without one. (Reading all of `data` from a rule, as in
# object.get(data, ["launcher_policy", ...]), is recursion to OPA: it includes the rule itself.)
worker_binary_settings := {k: v | some k, v in data.launcher_policy}

worker_binary_denials contains msg if {
	some name, digest in input.launcher.binaries
	allowed := object.get(worker_binary_settings, ["allowed_binary_digests", name], [])
	not digest in allowed
	msg := sprintf("binary %s has digest %s, which is not allowlisted", [name, digest])
}

worker_binary_denials contains "no verified worker binary was reported" if {
	count(object.get(input, ["launcher", "binaries"], {})) == 0
}

deny contains msg if some msg in worker_binary_denials
