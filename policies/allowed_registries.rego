# Allow only runner images from the registries listed in data.launcher_policy.allowed_registries.
# An image without a registry host ("alpine", "org/image") is on docker.io. No list denies all.
package spacelift

import rego.v1

# data.launcher_policy, or {} without one. (Reading all of `data` from a rule, as in
# object.get(data, ["launcher_policy", ...]), is recursion to OPA: it includes the rule itself.)
allowed_registries_settings := {k: v | some k, v in data.launcher_policy}

registry_of(image) := host if {
	first := split(image, "/")[0]
	count(split(image, "/")) > 1
	registry_host_like(first)
	host := lower(first)
} else := "docker.io"

registry_host_like(part) if contains(part, ".")

registry_host_like(part) if contains(part, ":")

registry_host_like(part) if part == "localhost"

registry_denials contains msg if {
	allowed := object.get(allowed_registries_settings, ["allowed_registries"], [])
	registry := registry_of(input.docker_image)
	not registry in {lower(r) | some r in allowed}
	msg := sprintf("image %q is not from an allowed registry (%s)", [input.docker_image, registry])
}

deny contains msg if some msg in registry_denials
