# Allow only runner images from the registries listed in data.launcher_policy.allowed_registries.
# An image without a registry host ("alpine", "org/image") is on docker.io. No list denies all.
package spacelift

import rego.v1

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
	allowed := object.get(data, ["launcher_policy", "allowed_registries"], [])
	registry := registry_of(input.docker_image)
	not registry in {lower(r) | some r in allowed}
	msg := sprintf("image %q is not from an allowed registry (%s)", [input.docker_image, registry])
}

deny contains msg if some msg in registry_denials
