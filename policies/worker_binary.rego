# Deny runs when a verified launcher binary's SHA-256 is not allowlisted.
#   data.launcher_policy.allowed_binary_digests: {"spacelift-worker": ["<sha256>", ...]}
# A launcher that reports no worker binary is denied too.
package spacelift

import rego.v1

worker_binary_denials contains msg if {
	some name, digest in input.launcher.binaries
	allowed := object.get(data, ["launcher_policy", "allowed_binary_digests", name], [])
	not digest in allowed
	msg := sprintf("binary %s has digest %s, which is not allowlisted", [name, digest])
}

worker_binary_denials contains "no verified worker binary was reported" if {
	count(object.get(input, ["launcher", "binaries"], {})) == 0
}

deny contains msg if some msg in worker_binary_denials
